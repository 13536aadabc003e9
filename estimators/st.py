"""Straight-through estimator (Bengio, Léonard & Courville 2013).

Forward: D ~ Cat(softmax(logits)), one-hot. Backward: as if D were softmax(logits/τ), i.e.
z = D + π_τ − sg[π_τ] with π_τ = softmax(logits/τ). Biased (first-order approximation; Liu et al. 2023).
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Estimator, Objective, check_temperature, expand_samples, sample_categorical


class StraightThrough(Estimator):
    """Straight-through: f(D) forward, gradient of f(softmax(logits/τ)) backward; biased."""

    latents = ("categorical",)
    unbiased = False

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = check_temperature(tau)

    def forward(self, logits: Tensor, f: Objective, samples: int = 1) -> Tensor:
        self.check_samples(samples)
        hard = sample_categorical(logits, samples)
        soft = expand_samples((logits / self.tau).softmax(-1), samples)
        return f(hard + soft - soft.detach()).mean(0)
