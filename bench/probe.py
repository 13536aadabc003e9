"""Gradient probes: M independent gradient estimates at frozen parameters, and their statistics.

The statistics are exactly those of DESIGN.md ("Metrics"): with ĝ_1..ĝ_M the estimates (each with the
run's own sample count S), ḡ their mean and g* the reference gradient,

    grad_variance = 1/(M−1) Σ ‖ĝ_m − ḡ‖²            trace of the covariance of ONE estimate
    grad_bias     = ‖ḡ − g*‖,  grad_bias_se = √(grad_variance / M)
    grad_bias_sq  = ‖ḡ − g*‖² − grad_variance / M    unbiased estimate of the squared bias
    grad_mse      = 1/M Σ ‖ĝ_m − g*‖²,  grad_cos = cos(ḡ, g*),  grad_snr = ‖ḡ‖² / grad_variance

Without a reference the bias fields are NaN.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from bench.tasks.base import Task
from estimators.base import Estimator

PROBE_FIELDS = ("grad_variance", "grad_bias", "grad_bias_se", "grad_bias_sq", "grad_mse", "grad_cos", "grad_snr")


def flatten(tensors: list[Tensor]) -> Tensor:
    return torch.cat([tensor.reshape(-1) for tensor in tensors])


def draw_gradients(task: Task, estimator: Estimator, samples: int, batch: Any, draws: int) -> Tensor:
    """M gradient estimates of ``task.loss`` with respect to the probed parameters, shape (M, P).

    The estimator is put in eval mode so that stateful parts (an EMA baseline) are read, not updated.
    """
    parameters = list(task.probed_parameters().values())
    was_training = estimator.training
    estimator.eval()
    try:
        rows = []
        for _ in range(draws):
            loss = task.loss(estimator, samples, batch)
            rows.append(flatten(torch.autograd.grad(loss, parameters, allow_unused=True, materialize_grads=True)))
    finally:
        estimator.train(was_training)
    return torch.stack(rows)


def gradient_statistics(gradients: Tensor, reference: Tensor | None) -> dict[str, float]:
    """The probe fields for M estimates (rows of ``gradients``) against an optional reference."""
    draws = gradients.shape[0]
    gradients = gradients.double()
    mean = gradients.mean(0)
    variance = float(((gradients - mean) ** 2).sum() / (draws - 1))
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
            grad_mse=float(((gradients - reference) ** 2).sum(1).mean()),
            grad_cos=float(mean @ reference) / norms if norms > 0 else math.nan,
        )
    return stats


def probe(task: Task, estimator: Estimator, samples: int, draws: int) -> dict[str, float]:
    """Run one probe on the task's fixed probe batch; adds ``estimate_time_ms`` (time of one estimate)."""
    batch = task.probe_batch()
    start = time.perf_counter()
    gradients = draw_gradients(task, estimator, samples, batch, draws)
    elapsed = time.perf_counter() - start
    reference = task.reference_gradient(batch)
    stats = gradient_statistics(gradients, flatten(reference) if reference is not None else None)
    stats["estimate_time_ms"] = 1000 * elapsed / draws
    return stats
