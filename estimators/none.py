"""The estimator for tasks with nothing to sample: the surrogate is f evaluated at the parameters.

    surrogate = f(params),   ĝ = ∇_θ f(params)

A task whose loss is deterministic given its data (the ``embedding`` task: a classifier's cross-entropy)
declares the latent kind ``none``; ``params`` is then whatever its ``distribution(batch)`` returns (for the
embedding task, the logits) and ``f`` maps it to per-example losses. Nothing is drawn, so ``samples`` is
ignored and the gradient on a given batch is exact (unbiased); the randomness that remains is the choice of
data batch.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from estimators.base import Estimator, Objective


class NoSampling(Estimator):
    """No sampling: surrogate f(params), the exact gradient of a deterministic loss; ``samples`` ignored."""

    latents = ("none",)
    unbiased = True

    def f_evaluations(self, params: Any, f: Objective, samples: int) -> int:
        return 1  # f evaluated once on the parameters themselves, whatever S

    def forward(self, params: Any, f: Objective, samples: int = 1) -> Tensor:
        return f(params)
