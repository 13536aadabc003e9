"""Exact gradient by enumeration: L(θ) = Σ_z p_θ(z) f(z) over every joint outcome of the coupled latents.

``f`` couples the trailing latent dimensions it reduces over (for a VAE, the L variables of one data
point): with C classes and m coupled variables that is C^m outcomes per leading index, each evaluated
once. Its gradient is exact, so it is the reference for bias; ``samples`` is ignored.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from estimators.base import Estimator, EstimatorError, Objective, one_hot_like, sample_categorical

MAX_OUTCOMES = 65536


def all_outcomes(classes: int, variables: int, device: torch.device) -> Tensor:
    """Class indices of every joint outcome, shape (classes**variables, variables), first variable slowest."""
    digits = torch.arange(classes**variables, device=device).unsqueeze(-1)
    powers = classes ** torch.arange(variables - 1, -1, -1, device=device)
    return (digits // powers) % classes


class Exact(Estimator):
    """Enumeration of all outcomes: surrogate Σ_z p_θ(z) f(z); exact (the reference)."""

    latents = ("categorical",)
    unbiased = True

    def __init__(self, max_outcomes: int = MAX_OUTCOMES) -> None:
        super().__init__()
        self.max_outcomes = max_outcomes

    def forward(self, logits: Tensor, f: Objective, samples: int = 1) -> Tensor:
        # One throw-away evaluation tells how many trailing latent dimensions f couples.
        with torch.no_grad():
            kept = f(sample_categorical(logits, 1)).dim() - 1
        leading, coupled, classes = logits.shape[:kept], logits.shape[kept:-1], logits.shape[-1]
        variables = math.prod(coupled)
        if classes**variables > self.max_outcomes:
            raise EstimatorError(
                f"exact enumeration needs {classes}^{variables} = {classes**variables} evaluations of f per "
                f"data point, more than max_outcomes={self.max_outcomes}; use a sampling estimator."
            )
        index = all_outcomes(classes, variables, logits.device).reshape(-1, *[1] * kept, *coupled)
        index = index.expand(-1, *leading, *coupled)
        z = one_hot_like(index, logits.expand(index.shape[0], *logits.shape))
        log_prob = (z * torch.log_softmax(logits, -1)).sum(-1)
        log_prob = log_prob.flatten(start_dim=1 + kept).sum(-1) if coupled else log_prob
        return (log_prob.exp() * f(z)).sum(0)
