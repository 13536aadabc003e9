"""Gapped straight-through (Fan, Lee, Chen, Liu, Zhang & Sun 2022, "Training Discrete Deep Generative Models
via Gapped Straight-Through Estimator", ICML; GST-κ in the comparisons of Liu et al. 2023, "ReinMax").

Forward: D ~ Cat(softmax(θ)), one-hot, as straight-through. Backward: through the relaxation
softmax((θ + m)/τ) with a deterministic perturbation m instead of ST-Gumbel-Softmax's Gumbel noise, chosen
given D so that the perturbed logits put D on top with a gap κ to every other class:

    m_D = max_j θ_j − θ_D                       (the sampled class raised to the largest logit),
    m_j = −max(0, θ_j + κ − max_i θ_i),  j ≠ D  (the others lowered to at least κ below it),

m held fixed (no gradient through it). Fan et al. derive these as the properties of the Gumbel perturbation
given D that matter for the gradient (the sampled class on top, by a margin); removing the remaining noise of
the perturbation removes its variance. Biased, like every straight-through estimator. Parameters f depends
on directly (a decoder) get ∇f(D).
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import EstimatorError, Noise, Objective, expand_samples, sample_categorical
from estimators.schedule import TemperatureEstimator


def gapped_logits(logits: Tensor, hard: Tensor, gap: float) -> Tensor:
    """θ + m (gradient through θ only) for one-hot samples ``hard`` (S, *logits.shape)."""
    expanded = expand_samples(logits, hard.shape[0])
    with torch.no_grad():
        fixed = expanded.detach()
        top = fixed.max(-1, keepdim=True).values
        raised = (top - fixed) * hard
        lowered = (fixed + gap - top).clamp(min=0.0) * (1 - hard)
        perturbation = raised - lowered
    return expanded + perturbation


class GappedStraightThrough(TemperatureEstimator):
    """Gapped straight-through: f(D) forward; backward through softmax((θ + m)/τ), m the deterministic gapped
    perturbation given D; biased."""

    latents = ("categorical",)
    unbiased = False

    def __init__(
        self,
        gap: float = 1.0,
        tau: float = 1.0,
        tau_min: float | None = None,
        anneal_rate: float = 0.0,
        anneal_every: int = 1,
    ) -> None:
        super().__init__(tau, tau_min, anneal_rate, anneal_every)
        gap = float(gap)
        if not gap >= 0 or gap == float("inf"):
            raise EstimatorError(
                f"the gap κ of gapped straight-through must be a finite number >= 0, got {gap}."
            )
        self.gap = gap

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        """``noise`` (stream ``uniform``) fixes the sampled class D (common random numbers)."""
        self.check_samples(samples)
        hard = sample_categorical(logits, samples, noise)
        soft = (gapped_logits(logits, hard, self.gap) / self.tau).softmax(-1)
        return f(hard + soft - soft.detach()).mean(0)
