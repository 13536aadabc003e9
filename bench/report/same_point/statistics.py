"""Statistics of a report's studies over checkpoints and seeds: ratios to a baseline, ranks, an interval
over seeds, the bias test's verdicts, and how much the common random numbers sharpen each paired comparison.

Interval over seeds. A seed's value is its mean over the checkpoints of its trajectory (the checkpoints of
one trajectory are correlated, the seeds are not: Field & Welsh 2007, resampling clusters); across seeds,
the 95% t-interval of the mean of those per-seed values, on the log scale for ratios (the per-seed log
ratio of an estimator's MSE to the baseline's). Its coverage at 5 seeds, in a simulation of this very
statistic (``bench.report.same_point.coverage``), is 0.95 within its binomial band for normal and for
heavy-tailed (log-normal) draws; the percentile bootstrap over 5 seeds it replaces covers about 0.83 (its
spread is the plug-in one, √(4/5) of the sample's, and its quantiles are the normal's where 4 degrees of
freedom call for Student's t). With fewer than ``MINIMUM_SEEDS`` seeds no interval is given.

Bias verdicts. A table's verdicts are Holm-adjusted over the probes of that table (every estimator × seed ×
checkpoint it summarises: ``bias_adjusted``), so that the chance of calling any unbiased estimator of the
table biased is at most 5%, as far as the p-values hold their size.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.same_point.tables import DEFAULT_BASELINE
from bench.report.statistics import MINIMUM_BAND_SEEDS, holm, interval

MINIMUM_SEEDS = MINIMUM_BAND_SEEDS  # fewer seeds than this: no interval over seeds, said in words
BIAS_LEVEL = 0.05  # Holm-adjusted grad_bias_p below this: the probe shows a bias
INTERVAL_TEXT = "a 95% t-interval over seeds (of the logarithm for ratios)"
"""How the tables name their interval over seeds."""


def coverage_text() -> str:
    """The sentence under a table with those intervals: their coverage, measured
    (``bench.report.same_point.coverage``, imported here so that ``python -m`` can run that module)."""
    from bench.report.same_point.coverage import statement

    return f"Intervals over seeds: {statement()}."


def over_seeds(values: pd.Series, log: bool) -> tuple[float, float, float, int]:
    """(estimate, low, high, seeds) of per-seed values: their mean (geometric with ``log``, over the
    positive values) and its 95% t-interval over seeds (module docstring); low and high are NaN with fewer
    than ``MINIMUM_SEEDS``."""
    data = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    if log:
        data = data[data > 0]
    found = interval(data, log=log)
    if found.count == 0:
        return math.nan, math.nan, math.nan, 0
    if found.count < MINIMUM_SEEDS:
        return found.center, math.nan, math.nan, found.count
    return found.center, found.low, found.high, found.count


def bias_adjusted(table: pd.DataFrame) -> pd.Series:
    """Holm-adjusted ``grad_bias_p`` over every probe (row) of ``table``, the family of the table that
    shows them; NaN where a probe has no p-value (or the table has no column)."""
    if "grad_bias_p" not in table:
        return pd.Series(math.nan, index=table.index)
    return pd.Series(holm(table["grad_bias_p"]), index=table.index)


def bias_family(table: pd.DataFrame) -> str:
    """The family ``bias_adjusted`` is over, as a table's note names it."""
    tested = int(table["grad_bias_p"].notna().sum()) if "grad_bias_p" in table else 0
    return f"Holm over the {tested} probes of this table (estimators × seeds × checkpoints)"


def member_label(estimator: str, samples: float) -> str:
    return f"{estimator} (S={int(samples)})"


def wide(study: pd.DataFrame) -> pd.DataFrame:
    """One row per (trajectory, seed, checkpoint, estimator, S) with a column per metric; members only."""
    members = study[study["samples"].notna()]
    keys = ["trajectory", "seed", "checkpoint", "step", "estimator", "samples"]
    return members.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()


def fixed_members(paired: pd.DataFrame, table: pd.DataFrame) -> set[tuple[str, float]]:
    """(estimator, S) of the fixed-samples comparison (every member when paired.csv says nothing)."""
    fixed = paired[paired["variant"] == "fixed"]
    found = set(zip(fixed["estimator"], fixed["samples"].astype(float), strict=True))
    return found or set(zip(table["estimator"], table["samples"].astype(float), strict=True))


def relative(table: pd.DataFrame, column: str, baseline: str) -> pd.Series:
    """``column`` of every row divided by the baseline's at the same trajectory, seed and checkpoint."""
    keys = ["trajectory", "seed", "checkpoint"]
    base = table[table["estimator"] == baseline].groupby(keys)[column].first().rename("base")
    joined = table.join(base, on=keys)
    return joined[column] / joined["base"]


HORIZON = 10.0
"""H of the horizon MSE ‖b‖² + V/H by which the same-point tables rank estimators: 1/(1 − β₁) for Adam's
β₁ = 0.9, the steps over which it averages its gradients. Of the same-point statistics, it predicted the
ranking of the estimators' training outcomes best on the three tasks of the results page's
predictive-validity study (``scripts/predictive_validity.py``; ahead of the per-estimate MSE)."""
RANKED_BY = f"horizon MSE ‖b‖² + V/{HORIZON:g}"


def horizon_mse(table: pd.DataFrame) -> pd.Series:
    """‖b‖² + V/H per row, from ``grad_mse`` = ‖b‖² + V and ``grad_variance`` = V."""
    variance = pd.to_numeric(table["grad_variance"], errors="coerce")
    return pd.to_numeric(table["grad_mse"], errors="coerce") - variance * (1 - 1 / HORIZON)


def ranked_by_horizon(table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Each row's rank (1 = lowest) by the horizon MSE among the rows of its ``keys`` group."""
    return table.assign(horizon=horizon_mse(table)).groupby(keys)["horizon"].rank()


def aggregate(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per estimator: MSE and variance relative to the baseline (geometric means) and the mean rank by the
    horizon MSE (``horizon_mse``),
    each over seeds (a seed's value: its mean over checkpoints) with its t-interval over seeds; and the
    probes the bias test calls biased, Holm over every probe of ``table``."""
    table = table.copy()
    table["mse_relative"] = relative(table, "grad_mse", baseline) if "grad_mse" in table else math.nan
    table["variance_relative"] = relative(table, "grad_variance", baseline)
    if "grad_mse" in table:
        table["rank"] = ranked_by_horizon(table, ["trajectory", "seed", "checkpoint"])
    else:
        table["rank"] = math.nan
    adjusted = bias_adjusted(table)
    table["biased"] = (adjusted < BIAS_LEVEL).where(adjusted.notna())
    rows = []
    for (estimator, samples), group in table.groupby(["estimator", "samples"]):
        seeds = group.groupby("seed").agg(
            mse=(
                "mse_relative",
                lambda v: float(np.exp(np.log(v[v > 0]).mean())) if (v > 0).any() else math.nan,
            ),
            variance=(
                "variance_relative",
                lambda v: float(np.exp(np.log(v[v > 0]).mean())) if (v > 0).any() else math.nan,
            ),
            rank=("rank", "mean"),
        )
        tested = group["biased"].dropna()
        rows.append(
            {
                "estimator": estimator,
                "samples": samples,
                "f_evals": group["f_evals"].iloc[0] if "f_evals" in group else math.nan,
                "mse": over_seeds(seeds["mse"], log=True),
                "variance": over_seeds(seeds["variance"], log=True),
                "rank": over_seeds(seeds["rank"], log=False),
                "biased": f"{int(tested.sum())}/{len(tested)}" if len(tested) else "—",
            }
        )
    frame = pd.DataFrame(rows)
    order = [value[0] if not math.isnan(value[0]) else math.inf for value in frame["rank"]]
    return frame.assign(order=order).sort_values(["order", "estimator"]).drop(columns="order")


def baseline_of(study: pd.DataFrame, table: pd.DataFrame) -> str:
    """The paired comparisons' baseline: the studies' ``study.baseline`` where it was probed, else rloo,
    else the first estimator by name."""
    names = set(table["estimator"])
    chosen = study["study_baseline"].mode() if "study_baseline" in study else pd.Series(dtype=str)
    for candidate in [*chosen.tolist(), DEFAULT_BASELINE]:
        if candidate in names:
            return candidate
    return sorted(names)[0]


def sharpened_pairs(paired: pd.DataFrame, threshold: float = 0.8) -> pd.DataFrame:
    """Pairs of the fixed-samples comparison whose paired standard error of the MSE difference is, at the
    median over checkpoints and seeds, below ``threshold`` times the unpaired one: where common random
    numbers sharpen the comparison (each unordered pair once)."""
    chosen = paired[paired["variant"] == "fixed"]
    keys = ["seed", "step", "estimator", "samples", "baseline", "baseline_samples"]
    table = chosen.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    if table.empty or "mse_difference_se_unpaired" not in table:
        return pd.DataFrame()
    table = table[table["estimator"] < table["baseline"]]
    table = table.assign(gain=table["mse_difference_se"] / table["mse_difference_se_unpaired"])
    grouped = table.groupby(["estimator", "samples", "baseline", "baseline_samples"])
    found = grouped.agg(gain=("gain", "median"), correlation=("squared_error_correlation", "median"))
    return found[found["gain"] < threshold].sort_values("gain").reset_index()


def pairing_gain(paired: pd.DataFrame, baseline: str) -> dict[tuple[str, float], float]:
    """Per (estimator, S): the median over checkpoints and seeds of the paired standard error of the MSE
    difference against the baseline over the unpaired one (< 1: common random numbers helped)."""
    chosen = paired[(paired["variant"] == "fixed") & (paired["baseline"] == baseline)]
    keys = ["seed", "step", "estimator", "samples"]
    table = chosen.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    if table.empty or "mse_difference_se_unpaired" not in table:
        return {}
    table["gain"] = table["mse_difference_se"] / table["mse_difference_se_unpaired"]
    return {key: float(group["gain"].median()) for key, group in table.groupby(["estimator", "samples"])}


def shared_trajectory(study: pd.DataFrame) -> bool:
    """Whether the seeds of one trajectory's ``study`` rows (two or more seeds) are one and the same
    trajectory: at every checkpoint, every seed has the same parameters (``params_digest``, where the table
    has it) or, in tables without digests, the same checkpoint values (‖g*‖ and the task's evaluation, the
    rows without ``samples``)."""
    if study["seed"].nunique() < 2:
        return False
    if "params_digest" in study and study["params_digest"].notna().all():
        digests = study.groupby("step")["params_digest"].nunique()
        return bool((digests == 1).all())
    checkpoints = study[study["samples"].isna() & study["metric"].ne("draws")]
    if checkpoints.empty:
        return False
    values = checkpoints.groupby(["step", "metric"])["value"].nunique(dropna=False)
    return bool((values == 1).all())
