"""Paired statistics of two estimators probed at one checkpoint with common random numbers.

Per draw m, e_m = ĝ_m − g* (g* the checkpoint's reference gradient, shared by every estimator). Two
estimators a and b probed with the same noise give paired draws, and their comparison is a paired one
(Glasserman & Yao 1992, "Some guidelines and guarantees for common random numbers"). Estimator papers compare
gradient variance the same way, every estimator at the same parameters (Tucker et al. 2017, "REBAR"; Dong,
Mnih & Tucker 2020, "DisARM"; Shi et al. 2022, "Gradient Estimation with Discrete Stein Operators"):

    mse_difference             = 1/M Σ_m (‖e_m^a‖² − ‖e_m^b‖²)   (= grad_mse_a − grad_mse_b exactly)
    mse_difference_se          = sd_m(‖e_m^a‖² − ‖e_m^b‖²) / √M     its standard error, paired
    mse_difference_se_unpaired = √((sd²(‖e^a‖²) + sd²(‖e^b‖²)) / M)  what it would be for independent probes
    mse_ratio                  = grad_mse_a / grad_mse_b
    mse_log_ratio_se           = sd_m(‖e_m^a‖²/grad_mse_a − ‖e_m^b‖²/grad_mse_b) / √M
                                 the standard error of log(mse_ratio), paired (delta method), so that an
                                 interval for the ratio is taken, and drawn, on the log scale
    squared_error_correlation  = corr_m(‖e_m^a‖², ‖e_m^b‖²)          how much the pairing helps
    variance_ratio             = V̂_a / V̂_b,  V̂ = 1/(M−1) Σ_m ‖ĝ_m − ḡ‖²

with a 95% percentile interval for the variance ratio (``variance_ratio_low``, ``variance_ratio_high``)
from a bootstrap over the draws that resamples the same draw indices for both estimators, so that it keeps
the pairing (Efron & Tibshirani 1993, ch. 13). The resampled variance is Σ_m w_m ‖ĝ_m − ḡ‖² / (M − 1) with
ḡ the full sample's mean: it leaves out the resample's own re-centring, a term of relative size 1/M that
cancels to first order in the ratio. The paired standard error is reported whether pairing helps (gumbel
against gumbel_st, which share the Gumbel noise and differ only in where f is evaluated) or not (rloo
against st, whose gradients use the same classes in unrelated ways).

Without a reference gradient only the variance ratio exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

PAIRED_METRICS = (
    "mse_difference",
    "mse_difference_se",
    "mse_difference_se_unpaired",
    "mse_ratio",
    "mse_log_ratio_se",
    "squared_error_correlation",
    "variance_ratio",
    "variance_ratio_low",
    "variance_ratio_high",
)
"""The metrics of ``paired.csv`` (``bench.formats.contract.PAIRED_HEADER``), for an estimator against a
baseline."""

CHUNK = 256  # draws per chunk when the (M, P) draws are turned into per-draw norms in float64


@dataclass
class DrawNorms:
    """What the paired statistics need of one estimator's M draws: per draw, ‖ĝ_m − g*‖² (None without a
    reference) and ‖ĝ_m − ḡ‖², in float64."""

    squared_errors: np.ndarray | None
    centred: np.ndarray

    @property
    def variance(self) -> float:
        return float(self.centred.sum() / (len(self.centred) - 1))


def draw_norms(gradients: Tensor, reference: Tensor | None) -> DrawNorms:
    """Per-draw squared distances of the (M, P) draws from the reference and from their own mean."""
    mean = gradients.double().mean(0)
    centred, errors = [], []
    for chunk in gradients.split(CHUNK):
        chunk = chunk.double()
        centred.append(((chunk - mean) ** 2).sum(1))
        if reference is not None:
            errors.append(((chunk - reference.double()) ** 2).sum(1))
    return DrawNorms(torch.cat(errors).numpy() if reference is not None else None, torch.cat(centred).numpy())


def resampled_indices(draws: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, M) draw indices, drawn with replacement: one bootstrap resample per row."""
    return np.random.default_rng(seed).integers(0, draws, size=(resamples, draws))


def resampled_sums(norms: DrawNorms, indices: np.ndarray) -> np.ndarray:
    """Σ_m w_m ‖ĝ_m − ḡ‖² of every bootstrap resample (rows of ``indices``), shape (resamples,)."""
    return norms.centred[indices].sum(1)


def paired_statistics(
    a: DrawNorms, b: DrawNorms, resampled_a: np.ndarray, resampled_b: np.ndarray
) -> dict[str, float]:
    """The ``PAIRED_METRICS`` of estimator a against estimator b (module docstring); NaN where undefined.

    ``resampled_a``, ``resampled_b``: ``resampled_sums`` of both over the same resampled indices.
    """
    draws = len(a.centred)
    found = dict.fromkeys(PAIRED_METRICS, math.nan)
    if a.squared_errors is not None and b.squared_errors is not None:
        difference = a.squared_errors - b.squared_errors
        spread_a, spread_b = a.squared_errors.var(ddof=1), b.squared_errors.var(ddof=1)
        mse_a, mse_b = float(a.squared_errors.mean()), float(b.squared_errors.mean())
        found.update(
            mse_difference=float(difference.mean()),
            mse_difference_se=float(difference.std(ddof=1) / math.sqrt(draws)),
            mse_difference_se_unpaired=float(math.sqrt((spread_a + spread_b) / draws)),
            mse_ratio=mse_a / mse_b if mse_b > 0 else math.nan,
            mse_log_ratio_se=float(
                (a.squared_errors / mse_a - b.squared_errors / mse_b).std(ddof=1) / math.sqrt(draws)
            )
            if mse_a > 0 and mse_b > 0
            else math.nan,
            squared_error_correlation=correlation(a.squared_errors, b.squared_errors),
        )
    variance_a, variance_b = a.variance, b.variance
    if variance_b > 0:
        found["variance_ratio"] = variance_a / variance_b
        usable = resampled_b > 0
        if usable.any():
            ratios = resampled_a[usable] / resampled_b[usable]
            found["variance_ratio_low"], found["variance_ratio_high"] = (
                float(value) for value in np.percentile(ratios, [2.5, 97.5])
            )
    return found


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    spread = x.std() * y.std()
    return float(((x - x.mean()) * (y - y.mean())).mean() / spread) if spread > 0 else math.nan
