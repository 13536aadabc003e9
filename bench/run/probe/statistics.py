"""The statistics of a probe: M gradient estimates against a reference gradient (docs/design.md, "Metrics").

With ĝ_1..ĝ_M the estimates (each with the run's own sample count S), ḡ their mean, V̂ = 1/(M−1) Σ‖ĝ_m − ḡ‖²
and g* the reference gradient (exact or analytic; or r̄, the mean of N independent draws of an unbiased
estimator, with variance V̂_R, for a Monte-Carlo reference):

    grad_variance     = V̂                                  unbiased for tr Σ, Σ the covariance of ONE estimate
    grad_bias         = ‖ḡ − g*‖                           inflated by the probe's noise; not for ranking
    grad_bias_se      = √(V̂/M + V̂_R/N)                     its noise floor (null RMS)
    grad_bias_sq      = ‖ḡ − g*‖² − V̂/M − V̂_R/N             unbiased for ‖b‖², can be negative
    grad_mse          = 1/M Σ‖ĝ_m − g*‖² − V̂_R/N            mean squared error of one estimate
    grad_bias_p       = P(F(ν, ν₂) > T′)                   the test of zero bias (below)
    grad_bias_rel     = grad_bias_sq / ‖g*_e‖²,  grad_variance_rel = V̂ / ‖g*_e‖²
    grad_cos          = ⟨ḡ_e, g*_e⟩ / (‖g*_e‖ √(‖ḡ_e‖² − V̂/M)), clipped to [−1, 1]
    grad_snr          = (‖ḡ_e‖² − V̂/M) / V̂

where the subscript e marks the estimated part: the exact gradient of the deterministic terms (a VAE's KL),
the same in every draw, is subtracted from ḡ and g*, so that cosine, SNR and the relative effect sizes
describe the estimator rather than the loss. cos and SNR are debiased for the probe's noise (E‖ḡ‖² = ‖E ĝ‖² +
tr Σ/M) and null when ‖ḡ_e‖² ≤ V̂/M; the relative fields are null where ‖g*_e‖ is numerically zero.

**The test of zero bias** (``bias_test``; docs/design.md, "The test of zero bias", states its assumptions
and where it is approximate). D = ḡ − g* has covariance Σ_D = Σ/M (+ Σ_R/N), estimated by its trace
V̂_D = V̂/M (+ V̂_R/N).

1. T = ‖D‖² / V̂_D. Under no bias ‖D‖² is about a scaled χ²_ν with ν = (tr Σ_D)² / tr(Σ_D²), the effective
   rank (Satterthwaite). tr Σ² (and tr Σ_R², tr ΣΣ_R) are unbiased U-statistics over the disjoint pair
   differences d = ĝ_{2k} − ĝ_{2k+1} (E[(dᵀd′)²] = 4 tr Σ² for independent pairs), whatever the draws'
   distribution, and ratio-consistent at any dimension: no cap by the rank of the draws, which made the test
   conservative wherever the effective rank approaches M/2. tr Σ_D in ν is taken from the same differences,
   so that the two estimates' errors largely cancel (for draws along one direction ν = 1 + O(1/M)). ν is
   clipped to [1, P]; where the estimate is not positive (one pair carries all the variance) ν = P, and step
   2 then makes the test conservative.
2. V̂_D is about a scaled χ²_ν₂/ν₂: ν₂ = ν(M − 1) for Gaussian draws (Welch–Satterthwaite with a Monte-Carlo
   reference), or 2V̂_D²/Var̂(V̂_D) from the draws' fourth moment where that is below half of it: a handful of
   draws carrying the variance makes V̂_D far less certain than M − 1 degrees of freedom say.
3. Skewness (Hall 1992, "On the removal of skewness by transformation"): per coordinate p, with t_p = D_p/√v_p
   (v_p the variance of D_p) and λ_p the skewness of D_p (μ̂₃/M² over v_p^{3/2}), Hall's monotone
   transformation t_p ↦ t_p + λt²/3 + λ²t³/27 + λ/6 removes the first-order effect of skewness on the
   studentized mean; it is applied in proportion ρ_p = v_p² / Σ_q v_q², the coordinate's share of the
   statistic's null variance, and T′ = Σ_p v_p t′_p² / V̂_D. Where one coordinate dominates (a score function's
   log σ at a narrow Gaussian) it is Hall's test; where many share the variance their skewness averages out in
   the sum, and ρ_p → 0 keeps their noisy estimates out.

The p-value is P(F(ν, ν₂) > T′). With P = 1 and symmetric draws it is the t test. ``grad_bias_p`` is null when
the draws' variance is numerically zero (every draw equal, as for ``exact``, or equal up to rounding: V̂ ≤
(100·eps)²‖ḡ‖²) or there is no reference.

**Arithmetic.** The draws are centred once in their own dtype (float32 in training); every statistic comes
from that copy's squares and cubes (row and column sums), the (M/2) × (M/2) Gram matrix of the pair
differences and a few P-vectors: a handful of batched operations, float64 only for the reduced results,
where differences of nearly equal numbers are taken. Draws given in float64 are computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import special
from torch import Tensor

NAN = math.nan


def flatten(tensors: list[Tensor]) -> Tensor:
    # A sparse gradient (nn.Embedding(sparse=True)) is made dense: the statistics are over all entries.
    return torch.cat([(tensor.to_dense() if tensor.is_sparse else tensor).reshape(-1) for tensor in tensors])


@dataclass
class Moments:
    """What the statistics need from one set of n draws (rows of an (n, P) tensor)."""

    count: int
    mean: Tensor  # (P,) float64
    differences: Tensor  # (⌊n/2⌋, P), the draws' dtype: ĝ_{2k} − ĝ_{2k+1}, independent, covariance 2Σ
    variance: float  # V̂ = 1/(n−1) Σ‖ĝ_m − ḡ‖², unbiased for tr Σ
    pair_variance: float  # tr S = Σ‖d_k‖² / 2K: tr Σ again, from the pairs that estimate tr Σ² (for ν)
    trace_square: float  # unbiased tr Σ² from the pair differences; NaN with fewer than 2 pairs
    norm_spread: float  # Var̂(‖ĝ − E ĝ‖²) / n = (mean ‖c_m‖⁴ − V̂²) / n, from the fourth moment
    coordinate_variance: Tensor  # (P,) float64: σ̂²_p, unbiased
    coordinate_third: Tensor  # (P,) float64: μ̂₃_p = 1/n Σ c_mp³


def pair_differences(draws: Tensor) -> Tensor:
    """ĝ_{2k} − ĝ_{2k+1} for the ⌊n/2⌋ disjoint pairs: independent, mean 0, covariance 2Σ."""
    half = draws.shape[0] // 2
    return draws[0 : 2 * half : 2] - draws[1 : 2 * half : 2]


def trace_of_square(differences: Tensor) -> tuple[float, float]:
    """tr Σ and tr Σ² from K pair differences (covariance 2Σ): (Σ‖d_k‖² / 2K, the mean over k ≠ l of
    (d_kᵀd_l)² / 4), both unbiased for any distribution with four moments, whatever P.

    Leaving out the (d_kᵀd_k)² terms is what keeps tr Σ² free of the (tr Σ)²/K that makes the plug-in tr S²
    useless when P exceeds the draws (it caps the effective rank near K). Σ_{k,l} (d_kᵀd_l)² = ‖DDᵀ‖²_F =
    ‖DᵀD‖²_F: the smaller Gram matrix (K × K or P × P) serves, formed in the draws' dtype, summed in
    float64."""
    count, dimension = differences.shape
    if count < 2:
        return NAN, NAN
    if count <= dimension:
        products = (differences @ differences.T).double()
        norms = products.diagonal()
    else:  # P < K: small draws, float64 throughout
        wide = differences.double()
        products = wide.T @ wide
        norms = (wide**2).sum(1)
    unbiased = (float((products**2).sum()) - float((norms**2).sum())) / (count * (count - 1)) / 4
    return float(norms.sum()) / (2 * count), unbiased


def draw_moments(draws: Tensor) -> Moments:
    """The moments of the rows of ``draws`` (n, P): one centred copy in the draws' own dtype, its squares
    (whose row sums are the ‖c_m‖² and column sums the σ̂²_p), and the K × K Gram matrix of the pair
    differences; float64 for the reductions' results."""
    count = draws.shape[0]
    floating = draws if draws.is_floating_point() else draws.float()
    mean = floating.mean(0)
    centred = floating - mean
    squares = centred * centred
    norms = squares.sum(1).double()
    variance = float(norms.sum()) / (count - 1) if count > 1 else NAN
    norm_spread = max(float((norms**2).mean()) - variance**2, 0.0) / count if count > 1 else NAN
    coordinate_variance = squares.sum(0).double() / max(count - 1, 1)
    squares *= centred  # now the cubes: no second (n, P) temporary
    coordinate_third = squares.sum(0).double() / count
    del squares, centred
    differences = pair_differences(floating)
    return Moments(
        count,
        mean.double(),
        differences,
        variance,
        *trace_of_square(differences),
        norm_spread,
        coordinate_variance,
        coordinate_third,
    )


def trace_of_product(first: Moments, second: Moments) -> float:
    """Unbiased tr(Σ₁Σ₂) for two independent sets: the mean of (d_kᵀe_l)² / 4 over their pair differences."""
    one, two = first.differences, second.differences
    if one.shape[0] == 0 or two.shape[0] == 0:
        return NAN
    if one.shape[0] * two.shape[0] <= (one.shape[0] + two.shape[0]) * one.shape[1]:
        total = float(((one @ two.T).double() ** 2).sum())
    else:  # ‖DEᵀ‖²_F = ⟨DᵀD, EᵀE⟩_F, the P × P products when P is the smaller side
        total = float(((one.double().T @ one.double()) * (two.double().T @ two.double())).sum())
    return total / (one.shape[0] * two.shape[0]) / 4


def hall(t: Tensor, skewness: Tensor) -> Tensor:
    """Hall's (1992) monotone transformation of a studentized mean t whose numerator has skewness λ (its
    third cumulant over its variance^{3/2}): t + λt²/3 + λ²t³/27 + λ/6, whose derivative (1 + λt/3)² ≥ 0."""
    return t + skewness * t**2 / 3 + skewness**2 * t**3 / 27 + skewness / 6


@dataclass
class BiasTest:
    """The test of zero bias (module docstring): p = P(F(ν, ν₂) > T′), with log p for p below 1e-300."""

    p_value: float
    log_p: float
    statistic: float  # T′, the skewness-corrected T
    dof: float  # ν
    dof_denominator: float  # ν₂


def bias_test(probe: Moments, reference: Tensor | None, references: Moments | None = None) -> BiasTest | None:
    """The test that E ĝ equals the reference: ``reference`` g* (float64 (P,)) or, when ``references`` is
    given, the mean of independent draws of an unbiased estimator. None where the noise V̂_D is 0."""
    dimension = probe.mean.shape[0]
    draws = probe.count
    noise = probe.variance / draws
    coordinate_noise = probe.coordinate_variance / draws
    third = probe.coordinate_third / draws**2
    square = probe.trace_square / draws**2
    pair_noise = probe.pair_variance / draws
    if references is None:
        difference = probe.mean - reference.double()
    else:
        count = references.count
        difference = probe.mean - references.mean
        noise += references.variance / count
        coordinate_noise = coordinate_noise + references.coordinate_variance / count
        third = third - references.coordinate_third / count**2
        pair_noise += references.pair_variance / count
        cross = 2 * trace_of_product(probe, references) / (draws * count)
        square += cross + references.trace_square / count**2
    if not noise > 0:
        return None
    statistic = float(difference @ difference) / noise
    # ν within [1, P]; tr Σ_D from the same pair differences as tr Σ_D², whose errors then largely cancel in
    # the ratio (for draws along one direction it is 1 + O(1/K)).
    dof = min(max(pair_noise**2 / square, 1.0), float(dimension)) if square > 0 else float(dimension)
    # The denominator: Gaussian theory (Welch–Satterthwaite), or the draws' fourth moment where it says the
    # variance is far less certain (heavy tails).
    normal_spread = probe.trace_square / (draws**2 * (draws - 1))
    observed_spread = probe.norm_spread / draws**2
    if references is None:
        dof_denominator = dof * (draws - 1)
    else:
        normal_spread += references.trace_square / (count**2 * (count - 1))
        observed_spread += references.norm_spread / count**2
        dof_denominator = noise**2 / normal_spread if normal_spread > 0 else dof * (draws - 1)
    if math.isfinite(observed_spread) and observed_spread > 0:
        heavy_tailed = max(2 * noise**2 / observed_spread, 1.0)
        if heavy_tailed < dof_denominator / 2:
            dof_denominator = heavy_tailed
    dof_denominator = max(dof_denominator, 1.0)
    # Skewness: Hall's transformation per coordinate, in proportion to the coordinate's share ρ_p.
    varying = coordinate_noise > 0
    if bool(varying.any()):
        spread = coordinate_noise[varying]
        t = difference[varying] / spread.sqrt()
        skewness = third[varying] / spread**1.5
        share = spread**2 / (spread**2).sum()
        corrected = t + share * (hall(t, skewness) - t)
        fixed = float((difference[~varying] ** 2).sum())
        statistic = (float((spread * corrected**2).sum()) + fixed) / noise
    p_value = float(special.fdtrc(dof, dof_denominator, statistic))  # the ufunc: scipy.stats costs ms a call
    if p_value > 0:
        log_p = math.log(p_value)
    else:  # below 1e-300; scipy.stats imported here only: it adds 0.7 s to every run's start
        from scipy import stats

        log_p = float(stats.f.logsf(statistic, dof, dof_denominator))
    return BiasTest(p_value, log_p, statistic, dof, dof_denominator)


def numerically_zero(variance: float, mean_norm_sq: float, dtype: torch.dtype) -> bool:
    """Every draw equal up to rounding: V̂ ≤ (100·eps)²·‖ḡ‖² (eps of the draws' dtype)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
    return variance <= (100 * eps) ** 2 * mean_norm_sq


def draw_variance(draws: Tensor) -> float:
    """V̂ = 1/(n−1) Σ‖r̂_i − r̄‖² of the rows of ``draws``."""
    centred = draws - draws.mean(0)
    return float(torch.linalg.vector_norm(centred, dtype=torch.float64) ** 2) / (draws.shape[0] - 1)


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
    draws = gradients.shape[0]
    moments = draw_moments(gradients)
    mean, variance = moments.mean, moments.variance
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
    if reference is None and reference_draws is None:
        return stats_
    references = None
    reference_count, reference_variance = None, 0.0
    if reference_draws is not None:
        references = draw_moments(reference_draws)
        reference_count, reference_variance = references.count, references.variance
        reference_mean = references.mean
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
        references is not None
        and not numerically_zero(
            reference_variance, float(reference_mean @ reference_mean), reference_draws.dtype
        )
    )
    if testable:
        test = bias_test(moments, reference_mean if references is None else None, references)
        if test is not None:
            stats_["grad_bias_p"] = test.p_value
    return stats_
