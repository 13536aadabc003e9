"""The unordered set estimator (Kool, van Hoof & Welling 2020, "Estimating Gradients for Discrete Random
Variables by Sampling without Replacement", ICLR), with its built-in baseline.

A set S^k of k distinct outcomes is sampled without replacement from the joint distribution p_θ of the
latent variables f couples (all the variables of one data point): for a single categorical by Gumbel-top-k,
for several by stochastic beam search (Kool, van Hoof & Welling 2019), the ancestral Gumbel-top-k over the
joint, which gives the same set as Gumbel-top-k over all C^m joint outcomes without enumerating them. With
the leave-one-out ratios

    R(S^k, s) = P^{D∖s}(S^k ∖ {s}) / P(S^k),
    R^{D∖s}(S^k, s') = P^{D∖{s,s'}}(S^k ∖ {s, s'}) / P^{D∖s}(S^k ∖ {s}),  R^{D∖s}(S^k, s) = 1,

(P^A(T): the probability that sampling |T| outcomes without replacement from the domain A, p renormalized on
A, gives the set T in any order) the estimate is

    value  Σ_{s∈S^k} p(s) R(S^k, s) f(s)                          (unbiased for E[f]),
    ĝ      Σ_{s∈S^k} ∇p(s) R(S^k, s) (f(s) − B(S^k, s)) + Σ_s p(s) R(S^k, s) ∇f(s),
    B(S^k, s) = Σ_{s'∈S^k} p(s') R^{D∖s}(S^k, s') f(s'),

unbiased, the baseline B built from the same k evaluations (paper eq. 13). The ratios are constants (no
gradient flows through them).

Inclusion probabilities. For the Gumbel-top-k sample, T ⊆ S^k is the top |T| of the domain A ⊇ T exactly when
every perturbed log-probability in T exceeds the largest one of the rest R = A ∖ T, which is a Gumbel with
location log p(R); integrating over it (paper, Appendix) gives

    P^A(T) = ∫₀¹ Π_{j∈T} (1 − u^{a_j}) du = ∫_{−∞}^{∞} exp(x − eˣ) Π_{j∈T} (1 − exp(−a_j eˣ)) dx,

a_j = p(j)/p(R) (u = exp(−eˣ)). Every set above has the same rest D ∖ S^k, so one grid serves all of them. The
integrand in x is smooth and falls off double-exponentially to the right and at least like eˣ to the left;
it is evaluated in float64 on ``POINTS`` equally spaced points over [min(0, −max_j log a_j) − 25,
log(k + 1) + 3.5] and summed (the trapezoidal rule, whose error for such integrands is far below the float32
precision of the estimate; tested against the sum over the k! orders). p(R) = 1 − Σ_{s∈S^k} p(s) in float64;
when S^k is the whole domain (k ≥ C^m) the estimate is the exact gradient.

Cost: k = min(S, C^m) evaluations of f per estimate (``f_evals``), plus one evaluation of f on one sample
without a graph that tells which latent dimensions f couples (as ``exact`` does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from estimators.base import Estimator, EstimatorError, Noise, Objective, noise_stream
from estimators.exact import Exact

POINTS = 256  # grid points of the numerical integration (200 give 1e-9 in log R against the sum over orders)
LEFT_MARGIN = 25.0  # the grid starts this far left of where the last factor 1 − exp(−a eˣ) has risen
RIGHT_MARGIN = 3.5  # and ends this far right of log(k + 1), where exp(x − eˣ) has vanished
SMALLEST_REST = 1e-15  # p(D ∖ S^k) is at least this (below it float64 cannot resolve 1 − Σ p)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x ≤ 0, accurate near 0 and for very negative x (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def shifted_gumbel(perturbed: Tensor, target: Tensor) -> Tensor:
    """Gumbels ``perturbed`` (..., C) conditioned on their maximum being ``target`` (...): the children's
    perturbed log-probabilities in stochastic beam search (Kool et al. 2019, eq. 23, in its stable form)."""
    top = perturbed.max(-1, keepdim=True).values
    target = target.unsqueeze(-1)
    v = target - perturbed + log1mexp(perturbed - top)
    return target - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))


def stochastic_beam_search(log_p: Tensor, k: int, uniform: Tensor) -> tuple[Tensor, Tensor]:
    """k distinct joint outcomes without replacement from Π_l Cat(exp log_p_l) (log_p: (*A, m, C)).

    ``uniform`` (k, *A, m, C): the U(0, 1) numbers of the Gumbel perturbations, row j for the children of the
    j-th beam at each variable. Returns the outcomes' classes (*A, k', m) and their joint log-probabilities
    (*A, k'), k' = min(k, C^m), in decreasing order of their perturbed log-probability.
    """
    classes = log_p.shape[-1]
    tiny = torch.finfo(uniform.dtype).tiny
    gumbel = -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-7)))  # (k, *A, m, C)
    gumbel = gumbel.movedim(0, -3)  # (*A, k, m, C)
    phi = log_p[..., 0, :]  # (*A, C): the first variable's classes
    width = min(k, classes)
    perturbed, index = (phi + gumbel[..., 0, 0, :]).topk(width, dim=-1)
    phi = phi.gather(-1, index)
    codes = index.unsqueeze(-1)  # (*A, width, 1)
    for variable in range(1, log_p.shape[-2]):
        children = phi.unsqueeze(-1) + log_p[..., variable, :].unsqueeze(-2)  # (*A, width, C)
        noisy = children + gumbel[..., :width, variable, :]
        conditioned = shifted_gumbel(noisy, perturbed)  # each beam's children peak at its own value
        width = min(k, width * classes)
        perturbed, index = conditioned.flatten(-2).topk(width, dim=-1)
        phi = children.flatten(-2).gather(-1, index)
        parent, action = index // classes, index % classes
        codes = torch.cat(
            [
                codes.gather(-2, parent.unsqueeze(-1).expand(*parent.shape, codes.shape[-1])),
                action.unsqueeze(-1),
            ],
            dim=-1,
        )
    return codes, phi


def leave_out_ratios(log_p: Tensor, points: int = POINTS) -> tuple[Tensor, Tensor]:
    """log R(S^k, s) (..., k) and log R^{D∖s}(S^k, s') (..., k, k) for the k outcomes of a set sampled without
    replacement, from their log-probabilities ``log_p`` (..., k) (float64 recommended)."""
    k = log_p.shape[-1]
    total = torch.logsumexp(log_p, -1, keepdim=True)
    log_rest = log1mexp(total.clamp(max=math.log1p(-SMALLEST_REST)))
    log_a = log_p - log_rest  # (..., k)
    low = (-log_a.max(-1, keepdim=True).values).clamp(max=0.0) - LEFT_MARGIN
    high = math.log(k + 1) + RIGHT_MARGIN
    grid = torch.linspace(0.0, 1.0, points, dtype=log_p.dtype, device=log_p.device)
    x = low + (high - low) * grid  # (..., N)
    log_step = torch.log((high - low) / (points - 1))  # (..., 1)
    y = log_a.unsqueeze(-1) + x.unsqueeze(-2)  # (..., k, N): log(a_j eˣ)
    # log(1 − exp(−e^y)); for very negative y it is y − e^y/2 (1 − e^{−t} = t − t²/2 …), where exp underflows.
    factors = torch.where(y < -30.0, y - 0.5 * torch.exp(y), log1mexp(-torch.exp(y)))
    base = x - torch.exp(x)  # (..., N)
    whole = base + factors.sum(-2)  # (..., N)
    log_p_set = torch.logsumexp(whole, -1) + log_step.squeeze(-1)  # (...)
    without_one = whole.unsqueeze(-2) - factors  # (..., k, N)
    log_p_one = torch.logsumexp(without_one, -1) + log_step  # (..., k): P^{D∖s}(S^k ∖ {s})
    rows = []
    for s in range(k):  # one row of the second-order sets at a time: memory (..., k, N)
        without_two = without_one[..., s : s + 1, :] - factors  # (..., k, N)
        rows.append(torch.logsumexp(without_two, -1) + log_step)
    log_p_two = torch.stack(rows, dim=-2)  # (..., k, k): P^{D∖{s,s'}}(S^k ∖ {s, s'})
    log_r1 = log_p_one - log_p_set.unsqueeze(-1)
    log_r2 = log_p_two - log_p_one.unsqueeze(-1)
    diagonal = torch.eye(k, dtype=torch.bool, device=log_p.device)
    log_r2 = torch.where(diagonal, torch.zeros_like(log_r2), log_r2)
    return log_r1, log_r2


class UnorderedSet(Estimator):
    """The unordered set estimator with its built-in baseline over k = min(S, C^m) outcomes sampled without
    replacement from the joint of the m coupled variables; unbiased."""

    latents = ("categorical",)
    unbiased = True
    min_samples = 2  # the built-in baseline estimates E[f] from the k − 1 other outcomes
    points = POINTS

    def f_evaluations(self, logits: Tensor, f: Objective, samples: int) -> int:
        """min(S, C^m): the distinct outcomes of the set (C^m joint outcomes of the m variables f couples)."""
        _, coupled = Exact.coupled(logits, f)
        return min(samples, logits.shape[-1] ** math.prod(coupled))

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        if not isinstance(logits, Tensor) or logits.dim() == 0:
            raise EstimatorError(
                "the unordered set estimator is for categorical latents, given as logits of shape (..., C); "
                f"got {type(logits).__name__}."
            )
        kept, coupled = Exact.coupled(logits, f)
        classes, variables = logits.shape[-1], math.prod(coupled)
        leading = logits.shape[:kept]
        uniform = noise_stream(noise, "uniform", (samples, *logits.shape), logits)
        log_q = logits.log_softmax(-1).reshape(*leading, variables, classes)  # with the gradient
        exact_log_q = logits.detach().double().log_softmax(-1).reshape(*leading, variables, classes)
        codes, _ = stochastic_beam_search(
            exact_log_q, samples, uniform.reshape(samples, *leading, variables, classes)
        )  # (*A, k, m)
        k = codes.shape[-2]
        codes = codes.movedim(-2, 0)  # (k, *A, m)
        z = torch.zeros(k, *leading, variables, classes, dtype=logits.dtype, device=logits.device)
        z = z.scatter(-1, codes.unsqueeze(-1), 1.0)

        def joint(log_probs: Tensor) -> Tensor:  # Σ_l log q_l(z_l) of each outcome: (k, *A)
            return (z.to(log_probs.dtype) * log_probs).sum((-1, -2))

        log_p = joint(log_q)
        exact_log_p = joint(exact_log_q)
        values = f(z.reshape(k, *logits.shape))  # (k, *A)
        if k == classes**variables:  # the whole domain: P = 1 for every set, the estimate is exact
            log_r1 = torch.zeros_like(exact_log_p.movedim(0, -1))
            log_r2 = torch.zeros_like(log_r1.unsqueeze(-1).expand(*log_r1.shape, k))
        else:
            log_r1, log_r2 = leave_out_ratios(exact_log_p.movedim(0, -1), self.points)  # (*A, k), (*A, k, k)
        weights = (exact_log_p + log_r1.movedim(-1, 0)).exp().to(values.dtype)  # p(s) R(S^k, s)
        # B(S^k, s) = Σ_{s'} p(s') R^{D∖s}(S^k, s') f(s'): row s of the (k, k) matrix against f.
        second = (exact_log_p.movedim(0, -1).unsqueeze(-2) + log_r2).exp().to(values.dtype)  # (*A, k, k)
        baseline = (second * values.detach().movedim(0, -1).unsqueeze(-2)).sum(-1).movedim(-1, 0)  # (k, *A)
        advantage = (weights * (values.detach() - baseline)).detach()
        return (weights * values + advantage * (log_p - log_p.detach())).sum(0)
