"""Exact gradient by enumeration: L(θ) = Σ_z p_θ(z) f(z) over every joint outcome of the coupled latents.

``f`` couples the trailing latent dimensions it reduces over (for a VAE, the L variables of one data
point): with C classes and m coupled variables that is C^m outcomes per leading index, each evaluated
once. Its gradient is exact, so it is the reference for bias; ``samples`` is ignored. The codes reach f as
a broadcast view (stride 0 along the leading dimensions): f may reshape them but not modify them in place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from estimators.base import Estimator, EstimatorError, Objective, sample_categorical

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

    @staticmethod
    def coupled(logits: Tensor, f: Objective) -> tuple[int, torch.Size]:
        """How many leading dimensions f keeps, and the shape of the variables it couples (one data point)."""
        # One throw-away evaluation tells how many trailing latent dimensions f couples.
        with torch.no_grad():
            kept = f(sample_categorical(logits, 1)).dim() - 1
        return kept, logits.shape[kept:-1]

    def f_evaluations(self, logits: Tensor, f: Objective, samples: int) -> int:
        """C^m: every joint outcome of the m variables f couples, whatever S."""
        _, coupled = self.coupled(logits, f)
        return logits.shape[-1] ** math.prod(coupled)

    def forward(self, logits: Tensor, f: Objective, samples: int = 1) -> Tensor:
        kept, coupled = self.coupled(logits, f)
        classes = logits.shape[-1]
        variables = math.prod(coupled)
        if classes**variables > self.max_outcomes:
            raise EstimatorError(
                f"exact enumeration needs {classes}^{variables} = {classes**variables} evaluations of f per "
                f"data point, more than max_outcomes={self.max_outcomes}; use a sampling estimator."
            )
        index = all_outcomes(classes, variables, logits.device).reshape(-1, *[1] * kept, *coupled)
        # The same codes serve every leading index: z is a broadcast view (stride 0 along the leading
        # dimensions), which saves memory and lets an f whose expensive part does not depend on the leading
        # index (a VAE decoder) compute it once per code.
        zeros = torch.zeros(*index.shape, classes, dtype=logits.dtype, device=logits.device)
        codes = zeros.scatter(-1, index.unsqueeze(-1), 1.0)
        z = codes.expand(index.shape[0], *logits.shape)
        # log p(z) of every code, Σ_v log p(z_v): the one-hot codes times the flattened log-probabilities, one
        # matrix product (a third of the time of gathering them, forward and backward, for the VAE's 4096
        # codes). A log-probability of −inf (a logit of −inf) is clamped to the dtype's lowest number first,
        # so that the zeros of the codes do not turn it into NaN; its code's probability stays 0.
        outcomes = index.shape[0]
        log_probs = torch.log_softmax(logits, -1).flatten(start_dim=kept)
        log_probs = log_probs.clamp_min(torch.finfo(log_probs.dtype).min)
        log_prob = (log_probs @ codes.reshape(outcomes, -1).T).movedim(-1, 0)
        return (log_prob.exp() * f(z)).sum(0)
