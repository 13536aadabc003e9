"""Statistics of a report's studies over checkpoints and seeds: ratios to a baseline, ranks, a cluster
bootstrap over seeds (Field & Welsh 2007: the checkpoints of one trajectory are correlated, the seeds are
not), and how much the common random numbers sharpen each paired comparison."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.same_point.tables import DEFAULT_BASELINE

MINIMUM_SEEDS = 5  # fewer seeds than this: no interval over seeds, said in words
RESAMPLES = 2000
BIAS_LEVEL = 1e-3  # grad_bias_p below this: the checkpoint's draws show a bias


def over_seeds(values: pd.Series, log: bool, seed: int = 0) -> tuple[float, float, float, int]:
    """(estimate, low, high, seeds) of per-seed values: their mean (geometric with ``log``) and a 95%
    percentile interval from resampling the seeds; low and high are NaN with fewer than MINIMUM_SEEDS."""
    data = values.dropna().to_numpy(dtype=float)
    if log:
        data = np.log(data[data > 0])
    count = len(data)
    if count == 0:
        return math.nan, math.nan, math.nan, 0
    estimate = float(data.mean())
    low = high = math.nan
    if count >= MINIMUM_SEEDS:
        means = np.random.default_rng(seed).choice(data, size=(RESAMPLES, count)).mean(1)
        low, high = (float(value) for value in np.percentile(means, [2.5, 97.5]))
    if log:
        return math.exp(estimate), math.exp(low), math.exp(high), count
    return estimate, low, high, count


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


def aggregate(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per estimator: MSE and variance relative to the baseline (geometric means) and the mean rank by MSE,
    each over seeds (a seed's value: its mean over checkpoints) with the cluster-bootstrap interval."""
    table = table.copy()
    table["mse_relative"] = relative(table, "grad_mse", baseline) if "grad_mse" in table else math.nan
    table["variance_relative"] = relative(table, "grad_variance", baseline)
    if "grad_mse" in table:
        table["rank"] = table.groupby(["trajectory", "seed", "checkpoint"])["grad_mse"].rank()
    else:
        table["rank"] = math.nan
    if "grad_bias_p" in table:
        table["biased"] = (table["grad_bias_p"] < BIAS_LEVEL).where(table["grad_bias_p"].notna())
    else:
        table["biased"] = math.nan
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
