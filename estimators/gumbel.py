"""Gumbel-Softmax / Concrete relaxation (Jang et al. 2017; Maddison et al. 2017).

    y = softmax((logits + g)/τ),  g = −log(−log u),  u ~ U(0, 1)

The forward pass evaluates f on the relaxed sample y (not a one-hot vector), so the estimate is the exact
gradient of a *different*, relaxed objective: biased for the discrete one, with the bias vanishing and
the variance growing as τ → 0.
τ can be annealed during training (``tau_min``, ``anneal_rate``, ``anneal_every``; ``estimators.schedule``).
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Noise, Objective, expand_samples, gumbel_noise, softmax
from estimators.schedule import TemperatureEstimator


def perturbed_logits(logits: Tensor, samples: int, noise: Noise | None = None) -> Tensor:
    """logits + g, shape (S, *logits.shape), g Gumbel noise (from ``noise``'s stream ``uniform`` if given)."""
    expanded = expand_samples(logits, samples)
    return expanded + gumbel_noise(expanded.shape, logits, noise)


def relaxed_sample(logits: Tensor, samples: int, tau: float, noise: Noise | None = None) -> Tensor:
    """Concrete samples of shape (S, *logits.shape): softmax((logits + g)/τ) (``base.softmax``: fast over a
    few classes)."""
    return softmax(perturbed_logits(logits, samples, noise) / tau)


class Gumbel(TemperatureEstimator):
    """Relaxed Gumbel-Softmax: surrogate f(softmax((logits + g)/τ)); biased."""

    latents = ("categorical",)
    unbiased = False

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        return f(relaxed_sample(logits, samples, self.tau, noise)).mean(0)
