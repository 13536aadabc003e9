"""REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, "REBAR: Low-variance, unbiased gradient
estimates for discrete latent variable models", NeurIPS).

For a categorical latent with logits θ (π = softmax θ) and uniforms u, v ~ U(0, 1)^C:

    z = log π + g(u),  g = −log(−log u)         (Gumbel-perturbed log-probabilities)
    b = one_hot(argmax z) ~ Cat(π)               (the Gumbel-max trick)
    z̃ ~ p(z | b):  z̃_b = −log(−log v_b),  z̃_j = −log(exp(−z̃_b) − log(v_j)/π_j),  j ≠ b
    σ_λ(z) = softmax(z/λ)                        (the concrete relaxation at temperature λ)

and the estimate, with the relaxation as a control variate scaled by η,

    ĝ = [f(b) − η f(σ_λ(z̃))]·∇_θ log p_θ(b) + η ∇_θ f(σ_λ(z)) − η ∇_θ f(σ_λ(z̃)),

the gradients of the last two terms taken through z = z(θ, u) and z̃ = z̃(θ, v, b) (b fixed). It is
unbiased for every η and λ: the score-function term of f(σ_λ(z̃)) and the difference of the two
reparameterized terms have the same expectation (Tucker et al. 2017, §3; z and z̃ have the same marginal).
η and λ are the estimator's own parameters (``own_parameters``), trained to minimise the variance of ĝ
(``estimators.base.variance_backward``: ‖ĝ‖² with respect to the distribution's parameters), starting at
η = 1, λ = 0.5 as in the authors' code.

Binary latents: a Bernoulli is C = 2 with logits (0, θ); then z_1 − z_0 = θ + log u' − log(1 − u') is the
logistic noise of the paper's binary REBAR, softmax(z/λ)_1 = σ((z_1 − z_0)/λ), and z̃ given b is the
conditional logistic sample: the same estimator, one construction for both.

Cost: f at b, σ_λ(z) and σ_λ(z̃): 3S evaluations per estimate (one call of f on 3S samples). Parameters f
depends on directly (a decoder) get ∇f(b) + η(∇f(σ_λ(z)) − ∇f(σ_λ(z̃))), whose last two terms cancel in
expectation: unbiased, with some extra variance. ``noise`` (stream ``uniform``) fixes u and with it b
(common random numbers); v comes from the global generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from estimators.base import (
    Estimator,
    EstimatorError,
    Noise,
    Objective,
    gumbel_noise,
    match_dims,
    one_hot_like,
)


def conditional_perturbation(log_probs: Tensor, hard: Tensor, uniform: Tensor) -> Tensor:
    """z̃ ~ p(z | b): Gumbel-perturbed log-probabilities whose argmax is the one-hot ``hard``, reparameterized
    by the uniforms v (``uniform``), differentiable in ``log_probs`` (normalized: logsumexp = 0).

    The maximum is a standard Gumbel, z̃_b = −log E_b, and every other z̃_j a Gumbel(log π_j) truncated below
    it, z̃_j = −log(exp(−z̃_b) + E_j/π_j), with E = −log v ~ Exp(1) (Maddison, Tarlow & Minka 2014).
    """
    tiny = torch.finfo(log_probs.dtype).tiny
    log_exponential = torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-7)))  # log E
    top = -(hard * log_exponential).sum(-1, keepdim=True)
    others = -torch.logaddexp(-top, log_exponential - log_probs)
    return torch.where(hard > 0, top.expand_as(others), others)


def check_logits(logits: Tensor, name: str) -> None:
    if not isinstance(logits, Tensor) or logits.dim() == 0:
        raise EstimatorError(
            f"{name} is for categorical latents, given as logits of shape (..., C); got "
            f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}."
        )


class REBAR(Estimator):
    """REBAR: REINFORCE with the concrete relaxation η·f(σ_λ(·)) as a control variate, η and λ trained on
    the estimate's variance; unbiased. 3S evaluations of f per estimate."""

    latents = ("categorical",)
    unbiased = True
    relaxed_objective = True  # the control variate evaluates f at the relaxed samples

    def __init__(
        self,
        eta: float = 1.0,
        tau: float = 0.5,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    ) -> None:
        super().__init__()
        eta, tau = float(eta), float(tau)
        if not math.isfinite(eta):
            raise EstimatorError(f"REBAR's initial scale eta must be a finite number, got eta={eta}.")
        if not (tau > 0 and math.isfinite(tau)):
            raise EstimatorError(
                f"REBAR's initial temperature tau must be a finite number > 0, got tau={tau}."
            )
        self.eta = nn.Parameter(torch.tensor(eta))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(tau)))
        self.optimizer = optimizer

    @property
    def tau(self) -> float:
        """The current temperature λ (learned)."""
        return float(self.log_temperature.detach().exp())

    def f_evaluations(self, logits: Tensor, f: Objective, samples: int) -> int:
        """3S: f at b, at σ_λ(z) and at σ_λ(z̃) (S without the relaxed objective: RELAX's network alone)."""
        return 3 * samples if self.relaxed_objective else samples

    def control_variate(self, relaxed: Tensor, at_relaxed: Tensor | None, kept: int) -> Tensor:
        """c(σ_λ(z)) per sample and kept batch index, shape (S, *B[:kept]): here η·f(σ_λ(z))."""
        return self.eta * at_relaxed

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        check_logits(logits, type(self).__name__)
        shape = (samples, *logits.shape)
        log_probs = torch.log_softmax(logits, -1).expand(shape)
        gumbel = gumbel_noise(shape, logits, noise)
        # b from θ + g, exactly as every Gumbel-max estimator (common random numbers); z = log π + g has the
        # same argmax and relaxes it.
        hard = one_hot_like((logits.detach() + gumbel).argmax(-1), log_probs)
        perturbed = log_probs + gumbel
        uniform = torch.rand(shape, dtype=log_probs.dtype, device=log_probs.device)
        given = conditional_perturbation(log_probs, hard, uniform)
        temperature = self.log_temperature.exp()
        relaxed = (perturbed / temperature).softmax(-1)
        relaxed_given = (given / temperature).softmax(-1)
        if self.relaxed_objective:
            values, at_relaxed, at_given = f(torch.cat([hard, relaxed, relaxed_given])).split(samples)
        else:
            values, at_relaxed, at_given = f(hard), None, None
        kept = values.dim() - 1
        control = self.control_variate(relaxed, at_relaxed, kept)
        control_given = self.control_variate(relaxed_given, at_given, kept)
        log_prob = match_dims((hard * log_probs).sum(-1), values)
        # The coefficient keeps its graph to η, λ and φ (the variance objective differentiates ĝ with respect
        # to them); its path to θ is multiplied by log p − sg[log p] = 0.
        coefficient = values.detach() - control_given
        surrogate = (
            values
            + coefficient * (log_prob - log_prob.detach())
            + (control - control.detach())
            - (control_given - control_given.detach())
        )
        return surrogate.mean(0)
