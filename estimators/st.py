"""Straight-through estimator (Bengio, Léonard & Courville 2013).

Forward: D ~ Cat(softmax(logits)), one-hot. Backward: as if D were softmax(logits/τ), i.e.
z = D + π_τ − sg[π_τ] with π_τ = softmax(logits/τ). Biased (first-order approximation; Liu et al. 2023).
τ can be annealed during training (``tau_min``, ``anneal_rate``, ``anneal_every``; ``estimators.schedule``).
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Noise, Objective, expand_samples, sample_categorical
from estimators.schedule import TemperatureEstimator


class StraightThrough(TemperatureEstimator):
    """Straight-through: f(D) forward, gradient of f(softmax(logits/τ)) backward; biased."""

    latents = ("categorical",)
    unbiased = False

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        hard = sample_categorical(logits, samples, noise)
        soft = expand_samples((logits / self.tau).softmax(-1), samples)
        return f(hard + soft - soft.detach()).mean(0)
