"""ReinMax-Rao: ReinMax with its Jacobian Rao-Blackwellized over Gumbel noise conditioned on the sample
(Wang & Bui 2026, "Beyond ReinMax: Low-Variance Gradient Estimators for Discrete Latent Variables", arXiv
2603.08257; the authors' code ``danielwang0452/ReinMax_ASC``, method ``reinmax_v3``).

Forward: D ~ Cat(π₀), π₀ = softmax(θ), one-hot, as ReinMax (``estimators.reinmax``). Backward, with
g = ∂f/∂D the gradient arriving at the one-hot sample, ReinMax's

    ∇_θ = 2·(diag π₁ − π₁π₁ᵀ)·g − ½·(diag π₀ − π₀π₀ᵀ)·g,        π₁ = (π₀ + D)/2,

with the softmax Jacobian at π₁ in its first term replaced by the mean Jacobian of a Gumbel-Softmax at the
logits θ₁ = log π₁, over Gumbel noise conditioned on the sample (as Gumbel-Rao does for straight-through
Gumbel-Softmax, Paulus et al. 2021):

    ∇_θ = 2·J̄·g − ½·(diag π₀ − π₀π₀ᵀ)·g,
    J̄ = (1/R) Σ_r (diag π⁽ʳ⁾ − π⁽ʳ⁾π⁽ʳ⁾ᵀ)/τ,   π⁽ʳ⁾ = softmax((θ₁ + G_r)/τ),
    G_r ~ Gumbel given argmax(θ₁ + G_r) = D.

Each step follows the authors' code (``reinmax_v2.py``, ``rao_gumbel_v3``, called from the ``reinmax_v3``
branch of ``reinmax_jacobians.py``): θ₁ = log((softmax(θ) + D)/2) with π₀ at temperature 1 (ReinMax's own π₁
uses softmax(θ/τ)); the R conditional draws by the top-down construction from exponentials (Maddison, Tarlow
& Minka 2014; ``estimators.gumbel_rao.conditional_gumbel``, R = 100 in their code); the mean of the R
Jacobians divided by τ; the second term as ReinMax's (their ``grad_at_input_0``). Their final centring of the
gradient over the classes changes nothing here: both terms already sum to zero over the classes. The
conditional draws condition on D as if it were drawn from π₁ (D was drawn from π₀): the code's choice,
followed here; the construction needs only that D is one of the classes.

Biased, like ReinMax; its mean is not ReinMax's (J̄ is the conditional mean of a Gumbel-Softmax Jacobian,
not the Jacobian at π₁). Cost: one evaluation of f per sample; R softmaxes of C classes per variable. The
backward is written with ``softmax_jacobian_path`` (no custom autograd function), so the estimator runs
under ``torch.func.vmap``; the R conditional draws are the estimator's own, from the global generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import EstimatorError, Noise, Objective, expand_samples, sample_categorical
from estimators.gumbel_rao import conditional_gumbel
from estimators.reinmax import softmax_jacobian_path
from estimators.schedule import TemperatureEstimator


def check_draws(name: str, draws: int) -> int:
    if int(draws) != draws or draws < 1:
        raise EstimatorError(f"{name} needs draws >= 1 conditional Gumbel draws (R), got draws={draws}.")
    return int(draws)


def rao_jacobian_path(logits: Tensor, expanded: Tensor, hard: Tensor, tau: float, draws: int) -> Tensor:
    """A zero-valued tensor whose vector-Jacobian product with g is J̄·g: the mean over R Gumbel draws
    conditioned on argmax(``logits`` + G) = ``hard`` of (diag π⁽ʳ⁾ − π⁽ʳ⁾π⁽ʳ⁾ᵀ)·g/τ, π⁽ʳ⁾ = softmax((logits +
    G_r)/τ), the Jacobian with respect to ``expanded`` (the logits differentiated, (S, *B, C)).

    J̄ = (diag π̄ − Π̄)/τ with π̄ = mean_r π⁽ʳ⁾ and Π̄ = mean_r π⁽ʳ⁾π⁽ʳ⁾ᵀ, formed before the path, so that the
    backward keeps (S, *B, C, C) numbers rather than the R draws' (R, S, *B, C)."""
    perturbed = conditional_gumbel(logits, hard, draws)  # (R, S, *B, C), no gradient
    relaxed = (perturbed / tau).softmax(-1)
    mean = relaxed.mean(0)
    second = torch.einsum("r...i,r...j->...ij", relaxed, relaxed) / draws
    delta = expanded - expanded.detach()  # zero in value, the identity's Jacobian in θ
    return (mean * delta - (second @ delta.unsqueeze(-1)).squeeze(-1)) / tau


class ReinMaxRao(TemperatureEstimator):
    """ReinMax-Rao: f(D) forward; backward 2·J̄·g − ½(diag π₀ − π₀π₀ᵀ)g, J̄ the mean Gumbel-Softmax Jacobian at
    log((π₀ + D)/2) over R Gumbel draws conditioned on D; biased."""

    latents = ("categorical",)
    unbiased = False

    def __init__(
        self,
        draws: int = 100,
        tau: float = 1.0,
        tau_min: float | None = None,
        anneal_rate: float = 0.0,
        anneal_every: int = 1,
    ) -> None:
        super().__init__(tau, tau_min, anneal_rate, anneal_every)
        self.draws = check_draws("ReinMax-Rao", draws)

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        """``noise`` (stream ``uniform``) fixes the sampled class D; the R conditional draws are the
        estimator's own, from the global generator."""
        self.check_samples(samples)
        hard = sample_categorical(logits, samples, noise)
        expanded = expand_samples(logits, samples)
        probs = expanded.softmax(-1)  # π₀
        shifted = ((probs.detach() + hard) / 2).log()  # θ₁ = log π₁ (π₀ at temperature 1, as the code)
        first = rao_jacobian_path(shifted, expanded, hard, self.tau, self.draws)
        return f(hard + 2 * first - 0.5 * softmax_jacobian_path(probs, expanded)).mean(0)
