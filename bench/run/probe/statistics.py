"""The statistics of a probe: M gradient estimates against a reference gradient (docs/design.md, "Metrics").

With ĝ_1..ĝ_M the estimates (each with the run's own sample count S), ḡ their mean, V̂ = 1/(M−1) Σ‖ĝ_m − ḡ‖²
and g* the reference gradient (exact or analytic; or r̄, the mean of N independent draws of an unbiased
estimator, with variance V̂_R, for a Monte-Carlo reference):

    grad_variance     = V̂                                  unbiased for tr Σ, Σ the covariance of ONE estimate
    grad_bias         = ‖ḡ − g*‖                           inflated by the probe's noise; not for ranking
    grad_bias_se      = √(V̂/M + V̂_R/N)                     its noise floor (null RMS)
    grad_bias_sq      = ‖ḡ − g*‖² − V̂/M − V̂_R/N             unbiased for ‖b‖², can be negative
    grad_mse          = 1/M Σ‖ĝ_m − g*‖² − V̂_R/N            mean squared error of one estimate
    grad_bias_p       = P(F(ν, ν₂) > ‖ḡ − g*‖² / (V̂/M + V̂_R/N))   the test of zero bias
    grad_bias_rel     = grad_bias_sq / ‖g*_e‖²,  grad_variance_rel = V̂ / ‖g*_e‖²
    grad_cos          = ⟨ḡ_e, g*_e⟩ / (‖g*_e‖ √(‖ḡ_e‖² − V̂/M)), clipped to [−1, 1]
    grad_snr          = (‖ḡ_e‖² − V̂/M) / V̂

where the subscript e marks the estimated part: the exact gradient of the deterministic terms (a VAE's KL),
the same in every draw, is subtracted from ḡ and g*, so that cosine, SNR and the relative effect sizes
describe the estimator rather than the loss. cos and SNR are debiased for the probe's noise (E‖ḡ‖² = ‖E ĝ‖² +
tr Σ/M) and null when ‖ḡ_e‖² ≤ V̂/M; the relative fields are null where ‖g*_e‖ is numerically zero.

The bias test. Under no bias, ‖ḡ − g*‖² is a weighted sum of χ²₁ variables with weights the eigenvalues of
Σ/M (+ Σ_R/N); it is approximated by a scaled χ²_ν with ν = (tr Σ_tot)² / tr(Σ_tot²), the effective rank
(Satterthwaite), and the denominator V̂/M + V̂_R/N by a scaled χ²_ν₂/ν₂ with ν₂ from the variance of V̂ and
V̂_R (ν₂ = ν(M − 1) for an exact reference). tr(Σ²), tr(Σ_R²) and tr(ΣΣ_R) are estimated by U-statistics over
disjoint pair differences d = ĝ_i − ĝ_j (E[(dᵀd')²] = 4 tr Σ² for independent pairs; likewise across the
probe's and the reference's pairs), unbiased whatever the distribution of the draws. With P = 1 the test is
the t² test F(1, M − 1). The F reference is approximate: liberal for heavy-tailed draws (the score function
on a Gaussian). ``grad_bias_p`` is null when the draws' variance is numerically zero (every draw equal, as for
``exact``, or equal up to rounding: V̂ ≤ (100·eps)²‖ḡ‖²) or there is no reference.
"""

from __future__ import annotations

import math

import torch
from scipy import stats
from torch import Tensor

NAN = math.nan


def flatten(tensors: list[Tensor]) -> Tensor:
    # A sparse gradient (nn.Embedding(sparse=True)) is made dense: the statistics are over all entries.
    return torch.cat([(tensor.to_dense() if tensor.is_sparse else tensor).reshape(-1) for tensor in tensors])


def centred_float64(draws: Tensor) -> tuple[Tensor, Tensor, float, float]:
    """(centred float64 copy, mean, V̂, the variance of V̂). One copy, centred in place: (M, P) can be large.

    The variance of V̂ is estimated from the draws' fourth moment, (mean ‖ĝ_m − ḡ‖⁴ − V̂²)/M: for Gaussian
    draws that is 2 tr Σ²/M, but for heavy-tailed ones (a score function at a peaked distribution, where a
    few draws carry all the variance) it is far larger, and V̂ has far fewer degrees of freedom than M − 1.
    """
    centred = draws.to(torch.float64, copy=True)
    mean = centred.mean(0)
    centred -= mean
    squared_norms = (centred**2).sum(1)
    variance = float(squared_norms.sum() / (draws.shape[0] - 1))
    spread = max(float((squared_norms**2).mean()) - variance**2, 0.0) / draws.shape[0]
    return centred, mean, variance, spread


def pair_differences(draws: Tensor) -> Tensor:
    """ĝ_{2k} − ĝ_{2k+1} for the ⌊M/2⌋ disjoint pairs, float64: independent, mean 0, covariance 2Σ."""
    half = draws.shape[0] // 2
    return draws[0 : 2 * half : 2].double() - draws[1 : 2 * half : 2].double()


def trace_of_square(differences: Tensor) -> tuple[float, float]:
    """tr(Σ²) from pair differences (covariance 2Σ), two ways: (unbiased, plug-in).

    Unbiased: the mean over k ≠ l of (d_kᵀd_l)² / 4. Plug-in: tr(S²) of the differences' own covariance S
    (the k = l terms included), whose effective rank (tr S)²/tr(S²) never exceeds the rank of the draws: one
    for draws that vary along a single direction, where the unbiased estimate can be 0 when few draws vary.
    """
    count, dimension = differences.shape
    if count < 2:
        return NAN, NAN
    # Σ_{k,l} (d_kᵀd_l)² = ‖DDᵀ‖²_F = ‖DᵀD‖²_F: the smaller Gram matrix (K × K or P × P) serves.
    gram = differences @ differences.T if count <= dimension else differences.T @ differences
    total = float((gram**2).sum())
    diagonal = float(((differences**2).sum(1) ** 2).sum())  # the k = l terms, ‖d_k‖⁴
    return (total - diagonal) / (count * (count - 1)) / 4, total / count**2 / 4


def trace_of_product(differences: Tensor, other: Tensor) -> float:
    """Unbiased tr(ΣΣ_R) from pair differences of two independent sets: the mean of (d_kᵀe_l)² / 4."""
    count, dimension = differences.shape
    if count == 0 or other.shape[0] == 0:
        return NAN
    if count * other.shape[0] <= (count + other.shape[0]) * dimension:
        total = float(((differences @ other.T) ** 2).sum())
    else:  # ‖DEᵀ‖²_F = ⟨DᵀD, EᵀE⟩_F
        total = float(((differences.T @ differences) * (other.T @ other)).sum())
    return total / (count * other.shape[0]) / 4


def bias_test_degrees(
    variance: float,
    draws: int,
    squares: tuple[float, float],
    reference_variance: float = 0.0,
    reference_count: int | None = None,
    reference_squares: tuple[float, float] = (0.0, 0.0),
    cross: float = 0.0,
    dimension: int = 1,
    variance_spread: float = math.nan,
    reference_variance_spread: float = 0.0,
) -> tuple[float, float, float] | None:
    """(ν, ν₂, V̂/M + V̂_R/N) of the test of zero bias, Satterthwaite's degrees of freedom (module docstring);
    None when the noise is 0.

    ``squares`` estimates tr Σ² (unbiased, plug-in), ``reference_squares`` tr Σ_R² likewise, ``cross``
    tr(ΣΣ_R); without a Monte-Carlo reference (``reference_count`` None) those two are 0 and ν₂ = ν(M − 1).
    ν is the smaller of the two estimates' effective ranks, at least 1 and at most P: a larger ν makes the
    test stricter about small deviations, so where the draws cannot tell (few of them vary) it errs towards
    the conservative ν. ν₂ is its normal-theory value unless the one from ``variance_spread`` (and
    ``reference_variance_spread``), the variance of V̂ (and V̂_R) estimated from the draws' fourth moment, is
    below half of it: heavy-tailed draws make the denominator uncertain, and the test then needs a larger
    ratio.
    """
    count = reference_count or math.inf
    noise = variance / draws + (reference_variance / count if reference_count else 0.0)
    if not noise > 0:
        return None
    if dimension == 1:
        one = variance**2
        squares, reference_squares = (one, one), (reference_variance**2,) * 2
        cross = variance * reference_variance
    ranks = []
    for own, reference in zip(squares, reference_squares, strict=True):
        spread = own / draws**2 + (
            2 * cross / (draws * count) + reference / count**2 if reference_count else 0
        )
        if math.isfinite(spread) and spread > 0:
            ranks.append(noise**2 / spread)
    dof = min(max(min(ranks), 1.0), float(dimension)) if ranks else 1.0
    denominator_spread = squares[0] / (draws**2 * (draws - 1))
    if reference_count:
        denominator_spread += reference_squares[0] / (count**2 * (count - 1))
    if reference_count and math.isfinite(denominator_spread) and denominator_spread > 0:
        dof_denominator = max(noise**2 / denominator_spread, 1.0)
    else:
        dof_denominator = dof * (draws - 1)
    # Satterthwaite from the observed variance of the denominator V̂/M (+ V̂_R/N): 2 E[D]² / Var(D). Used
    # where it is below half the normal-theory value, a clear sign of heavy tails; otherwise the normal-theory
    # value stands (for P = 1 the test is then exactly the t² test F(1, M − 1)).
    observed = variance_spread / draws**2 + (reference_variance_spread / count**2 if reference_count else 0)
    if math.isfinite(observed) and observed > 0:
        heavy_tailed = max(2 * noise**2 / observed, 1.0)
        if heavy_tailed < dof_denominator / 2:
            dof_denominator = heavy_tailed
    return dof, dof_denominator, noise


def bias_p_value(error_norm_sq: float, *args: float, **kwargs: float) -> float:
    """P(F(ν, ν₂) > ‖ḡ − g*‖² / (V̂/M + V̂_R/N)); the arguments after the first are ``bias_test_degrees``'s."""
    degrees = bias_test_degrees(*args, **kwargs)
    if degrees is None:
        return NAN
    dof, dof_denominator, noise = degrees
    return float(stats.f.sf(error_norm_sq / noise, dof, dof_denominator))


def numerically_zero(variance: float, mean_norm_sq: float, dtype: torch.dtype) -> bool:
    """Every draw equal up to rounding: V̂ ≤ (100·eps)²·‖ḡ‖² (eps of the draws' dtype)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
    return variance <= (100 * eps) ** 2 * mean_norm_sq


def gradient_statistics(
    gradients: Tensor,
    reference: Tensor | None,
    deterministic: Tensor | None = None,
    reference_draws: Tensor | None = None,
) -> dict[str, float]:
    """The probe fields for M estimates (rows of ``gradients``, shape (M, P)).

    ``reference``: the reference gradient g* of the whole loss (shape (P,)), or None. ``reference_draws``:
    N independent draws of an unbiased estimator of it (a Monte-Carlo reference; then ``reference`` is
    ignored and g* is their mean). ``deterministic``: the exact gradient of the deterministic terms, removed
    from ḡ and g* for the estimated-part fields (cosine, SNR, relative bias and variance); None where it is
    not known (a task that overrides ``loss``), and then those fields describe the whole gradient.
    """
    draws, dimension = gradients.shape
    centred, mean, variance, variance_spread = centred_float64(gradients)
    estimated_mean = mean if deterministic is None else mean - deterministic.double()
    estimated_norm_sq = float(estimated_mean @ estimated_mean)
    signal = estimated_norm_sq - variance / draws
    stats_ = {
        "grad_variance": variance,
        "grad_bias_se": math.sqrt(variance / draws),
        "grad_snr": signal / variance if variance > 0 and signal > 0 else NAN,
        "grad_bias": NAN,
        "grad_bias_sq": NAN,
        "grad_mse": NAN,
        "grad_cos": NAN,
        "grad_bias_p": NAN,
        "grad_bias_rel": NAN,
        "grad_variance_rel": NAN,
    }
    del centred  # the pair differences below are taken from the draws themselves (their mean cancels)
    if reference is None and reference_draws is None:
        return stats_
    reference_count, reference_variance, reference_variance_spread = None, 0.0, 0.0
    if reference_draws is not None:
        reference_count = reference_draws.shape[0]
        _, reference_mean, reference_variance, reference_variance_spread = centred_float64(reference_draws)
    else:
        reference_mean = reference.double()
    reference_noise = reference_variance / reference_count if reference_count else 0.0
    noise = variance / draws + reference_noise
    error = mean - reference_mean
    error_norm_sq = float(error @ error)
    estimated_reference = reference_mean if deterministic is None else reference_mean - deterministic.double()
    reference_norm_sq = float(estimated_reference @ estimated_reference)
    if reference_count:  # ‖r̄_e‖² is inflated by the reference's own noise, as ‖ḡ_e‖² is by the probe's
        reference_norm_sq -= reference_variance / reference_count
    bias_sq = error_norm_sq - noise
    stats_.update(
        grad_bias=math.sqrt(error_norm_sq),
        grad_bias_se=math.sqrt(noise),
        grad_bias_sq=bias_sq,
        # 1/M Σ‖ĝ_m − g*‖² = ‖ḡ − g*‖² + (M−1)/M V̂  (exact identity; no second pass over the draws)
        grad_mse=error_norm_sq + variance * (draws - 1) / draws - reference_noise,
    )
    # ‖g*_e‖ is numerically zero when it is at the rounding level of the gradients it is the difference of.
    scale_sq = float(reference_mean @ reference_mean)
    if deterministic is not None:
        scale_sq = max(scale_sq, float(deterministic.double() @ deterministic.double()))
    if reference_norm_sq > (100 * torch.finfo(torch.float32).eps) ** 2 * scale_sq:
        stats_["grad_bias_rel"] = bias_sq / reference_norm_sq
        stats_["grad_variance_rel"] = variance / reference_norm_sq
        if signal > 0:
            cosine = float(estimated_mean @ estimated_reference) / math.sqrt(reference_norm_sq * signal)
            stats_["grad_cos"] = min(1.0, max(-1.0, cosine))
    # With a Monte-Carlo reference the test still has the reference's noise when the probe's draws are equal.
    testable = not numerically_zero(variance, float(mean @ mean), gradients.dtype) or (
        reference_count is not None
        and not numerically_zero(
            reference_variance, float(reference_mean @ reference_mean), reference_draws.dtype
        )
    )
    if testable:
        differences = pair_differences(gradients)
        squares = trace_of_square(differences) if dimension > 1 else (variance**2, variance**2)
        reference_squares, cross = (0.0, 0.0), 0.0
        if reference_draws is not None:
            reference_differences = pair_differences(reference_draws)
            reference_squares = trace_of_square(reference_differences)
            cross = trace_of_product(differences, reference_differences)
        stats_["grad_bias_p"] = bias_p_value(
            error_norm_sq,
            variance,
            draws,
            squares,
            reference_variance,
            reference_count,
            reference_squares,
            cross,
            dimension,
            variance_spread,
            reference_variance_spread,
        )
    return stats_
