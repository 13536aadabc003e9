"""The coverage of the same-point study's interval over seeds, measured by simulating the study's statistic.

The statistic (``bench.report.same_point.statistics``): per seed, the mean over the checkpoints of its
trajectory of log(MSE_a / MSE_rloo), each MSE the mean of M squared errors ‖ĝ_m − g*‖² of one estimator
drawn with common random numbers; across seeds, an interval for the mean of the per-seed values. The
simulation draws exactly that:

- a seed's trajectory has its own true log ratio δ_s = μ + τ·N(0, 1), and each checkpoint its own
  δ_s + κ·N(0, 1) around it (the checkpoints of one trajectory are correlated through δ_s);
- at each checkpoint, M draws (16 by default: fewer than a study's thousands, so that the probes' own
  noise, skewed for log-normal draws, weighs more and the check is harder) of a P-dimensional gradient
  error for the baseline, T(u_m), and for the
  estimator, √r·T(ρ·u_m + √(1 − ρ²)·u'_m), u and u' standard normal (common random numbers: correlated
  draw by draw), with r = exp(true log ratio), so that MSE_a / MSE_b = r in expectation; T is the
  identity (``normal``) or turns a normal into a standardised log-normal, exp(N(0, 1)) centred and scaled
  to variance 1 (``lognormal``: skewed and heavy-tailed, as a score function's draws are);
- the per-seed values' true mean is μ exactly: a's squared errors divided by r and b's have one
  distribution, so E log(MSE_a / MSE_b) = log r whatever M.

``coverage(kind, replicates)`` counts, per method, the replicates whose interval contains μ. ``python -m
bench.report.same_point.coverage`` prints the rates for the t-interval and the percentile bootstrap at 3, 5
and 10 seeds, with the 99.9% binomial band of a method that covers 95%.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np
from scipy import stats

KINDS = ("normal", "lognormal")


def standardised(normal: np.ndarray, kind: str) -> np.ndarray:
    """Standard normal draws as they are, or turned into exp(N(0, 1)) centred and scaled (mean 0,
    variance 1)."""
    if kind == "normal":
        return normal
    if kind != "lognormal":
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mean, variance = math.exp(0.5), (math.e - 1) * math.e
    return (np.exp(normal) - mean) / math.sqrt(variance)


def per_seed_log_ratios(
    generator: np.random.Generator,
    kind: str,
    replicates: int,
    seeds: int = 5,
    checkpoints: int = 5,
    draws: int = 16,
    dimension: int = 2,
    mean: float = math.log(0.5),
    between_seeds: float = 0.3,
    between_checkpoints: float = 0.2,
    correlation: float = 0.6,
) -> np.ndarray:
    """(replicates, seeds) per-seed values of the statistic (module docstring); their true mean is
    ``mean``."""
    trajectory = mean + between_seeds * generator.standard_normal((replicates, seeds, 1))
    true = trajectory + between_checkpoints * generator.standard_normal((replicates, seeds, checkpoints))
    shape = (replicates, seeds, checkpoints, draws, dimension)
    # Correlated normals, each turned into the draws' distribution: the two estimators' errors have the
    # same distribution up to the factor √r, and are dependent draw by draw.
    common = generator.standard_normal(shape)
    own = correlation * common + math.sqrt(1 - correlation**2) * generator.standard_normal(shape)
    baseline, estimator = standardised(common, kind), standardised(own, kind)
    mse_baseline = (baseline**2).sum(-1).mean(-1)
    mse_estimator = (estimator**2).sum(-1).mean(-1) * np.exp(true)
    return np.log(mse_estimator / mse_baseline).mean(-1)


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The t-interval of the mean of each row (the study's method, ``statistics.over_seeds``)."""
    count = values.shape[1]
    half = stats.t.ppf(0.5 + confidence / 2, count - 1) * values.std(1, ddof=1) / math.sqrt(count)
    centre = values.mean(1)
    return centre - half, centre + half


def percentile_bootstrap(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap of the mean of each row, resampling its values (the method the study used
    before; kept as the negative control of the coverage test)."""
    count = values.shape[1]
    picks = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    means = values[:, picks].mean(-1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=1)
    return low, high


METHODS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "t-interval": t_interval,
    "percentile bootstrap": percentile_bootstrap,
}


def coverage(kind: str, replicates: int, seed: int = 0, **sizes: float) -> dict[str, int]:
    """Per method of ``METHODS``, how many of ``replicates`` simulated studies (``per_seed_log_ratios``
    with ``sizes``; the same studies for every method) give an interval that contains the true mean."""
    generator = np.random.default_rng(seed)
    truth = float(sizes.get("mean", math.log(0.5)))
    values = per_seed_log_ratios(generator, kind, replicates, **sizes)
    found = {}
    for name, method in METHODS.items():
        low, high = method(values)
        found[name] = int(((low <= truth) & (truth <= high)).sum())
    return found


STATED_REPLICATES = 4000
STATED = {
    ("t-interval", "normal"): 3807,
    ("t-interval", "lognormal"): 3796,
    ("percentile bootstrap", "normal"): 3336,
    ("percentile bootstrap", "lognormal"): 3353,
}
"""The coverages the report states, as counts of ``STATED_REPLICATES`` simulated studies of 5 seeds:
``coverage(kind, STATED_REPLICATES)`` with the default sizes and seed (the test suite recomputes them)."""


def statement() -> str:
    """The sentence the report's same-point tables give about their intervals' coverage."""
    t = [STATED[("t-interval", kind)] / STATED_REPLICATES for kind in KINDS]
    bootstrap = [STATED[("percentile bootstrap", kind)] / STATED_REPLICATES for kind in KINDS]
    low, high = binomial_band(STATED_REPLICATES)
    return (
        f"its coverage at 5 seeds, measured in {STATED_REPLICATES} simulated studies of this very statistic, "
        f"is {t[0]:.3f} with normal and {t[1]:.3f} with heavy-tailed (log-normal) draws (a 95% method gives "
        f"{low / STATED_REPLICATES:.3f} to {high / STATED_REPLICATES:.3f} in 99.9% of such simulations), "
        f"where the percentile bootstrap over seeds that it replaces covers {bootstrap[0]:.3f} and "
        f"{bootstrap[1]:.3f} (`python -m bench.report.same_point.coverage`)"
    )


def binomial_band(replicates: int, rate: float = 0.95, level: float = 0.999) -> tuple[int, int]:
    """The central ``level`` band of Binomial(replicates, rate): the counts a method of coverage ``rate``
    gives in all but 1 − ``level`` of simulations."""
    tail = (1 - level) / 2
    return int(stats.binom.ppf(tail, replicates, rate)), int(stats.binom.isf(tail, replicates, rate))


def main(argv: list[str] | None = None) -> int:
    replicates = 4000
    low, high = binomial_band(replicates)
    print(
        f"coverage of nominal 95% intervals over seeds, {replicates} simulated studies each "
        f"(99.9% band of a 95% method: {low / replicates:.3f} to {high / replicates:.3f})"
    )
    for seeds in (3, 5, 10):
        for kind in KINDS:
            for name, covered in coverage(kind, replicates, seeds=seeds).items():
                print(f"  {seeds:2d} seeds  {kind:9s}  {name:20s}  {covered / replicates:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
