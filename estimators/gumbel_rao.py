"""Gumbel-Rao (Paulus, Maddison & Krause 2021, "Rao-Blackwellizing the Straight-Through Gumbel-Softmax
Gradient Estimator", ICLR).

Forward: D = one_hot(argmax(θ + G)), an exact sample of Cat(softmax(θ)), as in straight-through
Gumbel-Softmax (ST-GS). Backward: the ST-GS backward averaged over R Gumbel draws conditioned on D,

    ∇_θ ≈ (1/R) Σ_r ∂/∂θ softmax((θ + G_r)/τ) · g,    G_r ~ Gumbel(0, 1)^C conditioned on argmax(θ + G_r) = D,

a Monte Carlo estimate of E[ST-GS backward | D]. Conditioning cannot raise the variance (Rao-Blackwell) and
keeps the mean of ST-GS, so the estimator is biased exactly as ST-GS is, with less variance.

Conditional Gumbels, top-down (Maddison, Tarlow & Minka 2014; Paulus et al. 2021, App.): with
Z = Σ_j exp θ_j and E_j ~ Exp(1) i.i.d., the maximum X_k = log Z − log E_k of the perturbed logits
X = θ + G is Gumbel(log Z)-distributed for the chosen class k, and every other X_j is Gumbel(θ_j) truncated
below X_k: X_j = −log(exp(−X_k) + E_j·exp(−θ_j)).

Derivative through the noise: Paulus et al. write that d softmax_τ(θ + G_r)/dθ is taken through both θ and
the reparameterized G_r. We follow the reference implementation instead, which computes the conditional
noise from detached logits: G_r is held fixed (the partial derivative in θ), which is what
E[ST-GS backward | D] is, and what keeps the mean of the estimator equal to that of ST-GS
(``tests/estimators/test_gumbel_rao.py`` checks the mean against ST-GS). The total derivative adds a term
with another expectation: on the 4 × 8 VAE at initialization (8 probe images, R = 10, τ = 1, 600 draws of
each) it moves the mean estimate by 58% of its norm (χ² = 28,500 on 256 coordinates) and changes the
variance too (0.10× there; the ratio depends on the problem; ``scripts/estimator_truths.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import EstimatorError, Noise, Objective, sample_categorical
from estimators.schedule import TemperatureEstimator


def conditional_gumbel(logits: Tensor, hard: Tensor, draws: int) -> Tensor:
    """Perturbed logits X = θ + G, shape (R, *hard.shape), with G standard Gumbel given argmax X = ``hard``.

    ``hard`` is one-hot of shape (S, *logits.shape); ``logits`` of shape (*B, C), or (S, *B, C) for logits of
    each sample's own (ReinMax-Rao's log π₁). The result carries no gradient.
    """
    logits = logits.detach().expand(hard.shape)
    tiny = torch.finfo(logits.dtype).tiny
    uniform = torch.rand((draws, *hard.shape), dtype=logits.dtype, device=logits.device)
    log_exponential = torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-7)))  # log E, E ~ Exp(1)
    log_partition = torch.logsumexp(logits, -1, keepdim=True)
    top = log_partition - (hard * log_exponential).sum(-1, keepdim=True)  # X_k ~ Gumbel(log Z)
    others = -torch.logaddexp(-top, log_exponential - logits)  # Gumbel(θ_j) truncated below X_k
    return torch.where(hard > 0, top, others)


def gumbel_rao_sample(logits: Tensor, hard: Tensor, tau: float, draws: int) -> Tensor:
    """The one-hot ``hard`` carrying the Gumbel-Rao backward: mean over R of ∂softmax((θ + G_r)/τ)/∂θ."""
    noise = conditional_gumbel(logits, hard, draws) - logits.detach()
    soft = ((logits + noise) / tau).softmax(-1).mean(0)
    return hard + soft - soft.detach()


class GumbelRao(TemperatureEstimator):
    """Gumbel-Rao: one-hot forward; ST-GS backward averaged over R conditional Gumbel draws; biased."""

    latents = ("categorical",)
    unbiased = False

    def __init__(
        self,
        draws: int = 10,
        tau: float = 1.0,
        tau_min: float | None = None,
        anneal_rate: float = 0.0,
        anneal_every: int = 1,
    ) -> None:
        super().__init__(tau, tau_min, anneal_rate, anneal_every)
        if int(draws) != draws or draws < 1:
            raise EstimatorError(
                f"Gumbel-Rao needs draws >= 1 conditional Gumbel draws (R), got draws={draws}."
            )
        self.draws = int(draws)

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        """``noise`` (stream ``uniform``) fixes the sampled class D; the R conditional Gumbel draws given D
        are the estimator's own and come from the global generator."""
        self.check_samples(samples)
        hard = sample_categorical(logits, samples, noise)
        return f(gumbel_rao_sample(logits, hard, self.tau, self.draws)).mean(0)
