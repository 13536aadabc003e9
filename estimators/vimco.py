"""VIMCO (Mnih & Rezende 2016, "Variational Inference for Monte Carlo Objectives", ICML): the score function
for the K-sample importance-weighted bound, with a leave-one-out control variate per sample.

The objective is multi-sample (``estimators.base.ImportanceWeighted``): for one data point, K draws
z_1 … z_K ~ q_θ i.i.d. with log-weights w_k = log p(x, z_k) − log q_θ(z_k) give the bound

    L̂ = log (1/K) Σ_k exp w_k,    E[L̂] ≤ log p(x),

and the loss is −L̂. Its gradient is Σ_j L̂ ∇log q(z_j) + Σ_j w̃_j ∇w_j, w̃ = softmax(w). The score-function
term's signal L̂ is the same for every j; VIMCO replaces it by the per-sample learning signal

    L̂ − L̂_{−j},    L̂_{−j} = log (1/K) (Σ_{i≠j} exp w_i + exp ŵ_{−j}),    ŵ_{−j} = 1/(K−1) Σ_{i≠j} w_i,

w_j replaced by the geometric mean of the other weights (their arithmetic mean in log space). L̂_{−j} does
not depend on z_j, so E[L̂_{−j} ∇log q(z_j)] = 0 and the estimator stays unbiased. With S samples the
estimate is the mean over S independent K-sets. K ≥ 2; f is called once per K-set (``f_evals`` = S, each
evaluation reading K log-weights). A task without a multi-sample objective is refused.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from estimators.base import Estimator, EstimatorError, ImportanceWeighted, Noise, Objective
from estimators.score_function import sample_with_log_prob


def leave_one_out_bounds(weights: Tensor) -> Tensor:
    """L̂_{−j} for every j: log (1/K)(Σ_{i≠j} exp w_i + exp ŵ_{−j}), shape of ``weights`` (..., K)."""
    draws = weights.shape[-1]
    others_mean = (weights.sum(-1, keepdim=True) - weights) / (draws - 1)  # ŵ_{−j}
    eye = torch.eye(draws, dtype=torch.bool, device=weights.device)
    # Row j: the weights with w_j replaced by ŵ_{−j}.
    replaced = torch.where(eye, others_mean.unsqueeze(-1), weights.unsqueeze(-2))
    return torch.logsumexp(replaced, -1) - math.log(draws)


class VIMCO(Estimator):
    """VIMCO: −L̂ + Σ_j sg[−(L̂ − L̂_{−j})]·(log q(z_j) − sg[log q(z_j)]) per K-set; unbiased."""

    latents = ("categorical",)
    unbiased = True
    multi_sample = True

    def forward(self, params: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        if not isinstance(f, ImportanceWeighted):
            raise EstimatorError(
                "VIMCO trains a multi-sample objective (estimators.base.ImportanceWeighted: the K "
                f"log-weights of each data point), got {type(f).__name__}; on a VAE set task.objective=iwae."
            )
        z, log_prob = sample_with_log_prob(params, samples, noise)  # (S, *B), B = (*B[:d], K, *B[d+1:])
        weights = f.weights(z)  # (S, *B[:d], K)
        draws = weights.shape[-1]
        if draws < 2:
            raise EstimatorError(
                f"VIMCO's leave-one-out control variate needs K >= 2 draws per data point, got K={draws} "
                "(task.iwae_samples)."
            )
        # log q(z_k) of each draw: summed over the latent dimensions after the K draws.
        keep = 1 + f.set_dim + 1
        log_q = log_prob.sum(dim=tuple(range(keep, log_prob.dim()))) if log_prob.dim() > keep else log_prob
        bound = torch.logsumexp(weights, -1) - math.log(draws)  # L̂, (S, *B[:d]), differentiable through w
        signal = (bound.unsqueeze(-1) - leave_one_out_bounds(weights)).detach()
        surrogate = -bound - (signal * (log_q - log_q.detach())).sum(-1)
        return surrogate.mean(0)
