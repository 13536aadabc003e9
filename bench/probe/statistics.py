"""The statistics of a probe: M gradient estimates against an optional reference gradient.

With ĝ_1..ĝ_M the estimates (each with the run's own sample count S), ḡ their mean and g* the reference
gradient (``docs/design.md``, "Metrics"):

    grad_variance = 1/(M−1) Σ ‖ĝ_m − ḡ‖²            trace of the covariance of ONE estimate
    grad_bias     = ‖ḡ − g*‖,  grad_bias_se = √(grad_variance / M)
    grad_bias_sq  = ‖ḡ − g*‖² − grad_variance / M    unbiased estimate of the squared bias
    grad_mse      = 1/M Σ ‖ĝ_m − g*‖²,  grad_cos = cos(ḡ, g*),  grad_snr = ‖ḡ‖² / grad_variance

Without a reference the bias fields are NaN (null in JSON).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def flatten(tensors: list[Tensor]) -> Tensor:
    # A sparse gradient (nn.Embedding(sparse=True)) is made dense: the statistics are over all entries.
    return torch.cat([(tensor.to_dense() if tensor.is_sparse else tensor).reshape(-1) for tensor in tensors])


def gradient_statistics(gradients: Tensor, reference: Tensor | None) -> dict[str, float]:
    """The probe fields for M estimates (rows of ``gradients``) against an optional reference."""
    draws = gradients.shape[0]
    # One float64 copy, centred in place, and one pass for its norm: (M, P) can be large (M = 256 draws over
    # a VAE encoder's 12k parameters), and temporaries of that size cost more than the draws (bench.perf).
    centred = gradients.to(torch.float64, copy=True)
    mean = centred.mean(0)
    centred -= mean
    variance = float(torch.linalg.vector_norm(centred) ** 2 / (draws - 1))
    mean_norm_sq = float(mean @ mean)
    stats = {
        "grad_variance": variance,
        "grad_bias_se": math.sqrt(variance / draws),
        "grad_snr": mean_norm_sq / variance if variance > 0 else math.inf,
        "grad_bias": math.nan,
        "grad_bias_sq": math.nan,
        "grad_mse": math.nan,
        "grad_cos": math.nan,
    }
    if reference is not None:
        reference = reference.double()
        error = mean - reference
        norms = float(mean.norm() * reference.norm())
        stats.update(
            grad_bias=float(error.norm()),
            grad_bias_sq=float(error @ error) - variance / draws,
            # 1/M Σ‖ĝ_m − g*‖² = ‖ḡ − g*‖² + 1/M Σ‖ĝ_m − ḡ‖²  (exact identity; no second pass over the draws)
            grad_mse=float(error @ error) + variance * (draws - 1) / draws,
            grad_cos=float(mean @ reference) / norms if norms > 0 else math.nan,
        )
    return stats
