"""Statistics over seeds: mean ± 95% t-interval, per-configuration aggregates, derived quantities.

Seeds are the replicates. Runs of the same configuration (label) and seed, e.g. a run redone into another
folder, are averaged per seed first, so an interval's n is always the count of distinct seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.declarations import Column

CONFIDENCE = 0.95


def t_half_width(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean along ``axis`` (n ≥ 2 values)."""
    count = values.shape[axis]
    return stats.t.ppf(0.5 + CONFIDENCE / 2, count - 1) * values.std(axis, ddof=1) / math.sqrt(count)


def mean_ci(values: pd.Series) -> tuple[float, float, int]:
    """Mean, half-width of the 95% t-interval over seeds, and the count of finite values."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna().astype(float)
    values = values[np.isfinite(values)]
    count = len(values)
    if count == 0:
        return math.nan, math.nan, 0
    if count == 1:
        return float(values.mean()), math.nan, 1
    return float(values.mean()), float(t_half_width(values.to_numpy())), count


def format_ci(mean: float, half: float) -> str:
    """``mean ± half`` to 4 and 2 significant digits; the mean alone for one seed; "—" for none."""
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(half):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {half:.2g}"


def per_seed(values: pd.Series, seeds: pd.Series) -> pd.Series:
    """The mean of ``values`` per seed (runs of one seed are one replicate)."""
    return pd.to_numeric(values, errors="coerce").groupby(seeds).mean()


def seed_ci(values: pd.Series, seeds: pd.Series) -> tuple[float, float, int]:
    """``mean_ci`` over seeds of per-run ``values``, runs of one seed averaged first."""
    return mean_ci(per_seed(values, seeds))


def bias_in_se(bias: pd.Series, standard_error: pd.Series) -> pd.Series:
    """grad_bias / grad_bias_se: about 1 for an unbiased estimator; NaN where the error is not positive."""
    return pd.to_numeric(bias, errors="coerce") / pd.to_numeric(standard_error, errors="coerce").where(
        lambda se: se > 0
    )


def add_derived(summaries: pd.DataFrame) -> pd.DataFrame:
    """Summaries with the numeric fields as numbers and ``bias_in_se`` and ``work_variance`` added."""
    frame = summaries.copy()
    for column in ("grad_bias", "grad_bias_se", "grad_variance", "estimate_time_ms", "final_loss"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    frame["bias_in_se"] = bias_in_se(frame["grad_bias"], frame["grad_bias_se"])
    frame["work_variance"] = frame["grad_variance"] * frame["estimate_time_ms"]
    return frame


def add_derived_curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long metrics with ``bias_in_se`` added at every step that has both ``grad_bias`` and its SE."""
    wanted = metrics[metrics["metric"].isin(["grad_bias", "grad_bias_se"])]
    wide = wanted.pivot_table(index=["run", "step"], columns="metric", values="value", aggfunc="first")
    if not {"grad_bias", "grad_bias_se"} <= set(wide.columns):
        return metrics
    ratio = bias_in_se(wide["grad_bias"], wide["grad_bias_se"]).dropna()
    derived = ratio.rename("value").reset_index().assign(metric="bias_in_se")
    return pd.concat([metrics, derived[metrics.columns]], ignore_index=True)


def aggregate(summaries: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean ± 95% CI over seeds of ``columns`` for every (task, label), over runs with status ok.

    One row per configuration: ``task``, ``label``, ``seeds`` (distinct seeds), ``reference``, and for each
    column its mean and ``<column>_ci95`` (the interval's half-width).
    """
    rows = []
    ok = summaries[summaries["status"] == "ok"]
    for (task, label), group in ok.groupby(["task", "label"]):
        row = {
            "task": task,
            "label": label,
            "seeds": int(group["seed"].nunique()),
            "reference": group["reference"].iloc[0],
        }
        for column in columns:
            if column in group:
                row[column], row[f"{column}_ci95"], _ = seed_ci(group[column], group["seed"])
        rows.append(row)
    return pd.DataFrame(rows)


def run_values(column: Column, curves: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Per run (index: ``run``), the value a table column shows (``declarations.VALUES``)."""
    if column.value == "summary":
        values = runs.set_index("run")[column.metric] if column.metric in runs else None
        return pd.Series(dtype=float) if values is None else pd.to_numeric(values, errors="coerce")
    data = curves[(curves["metric"] == column.metric) & curves["value"].notna()]
    if column.value == "last":
        return data.sort_values("step").groupby("run")["value"].last()
    if column.value == "training":
        return data[data["step"] > 0].groupby("run")["value"].mean()
    return data[data["step"] == 0].groupby("run")["value"].mean()


def column_table(columns: tuple[Column, ...], curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per label (runs with status ok): seeds, and for each column its mean and 95% CI half-width over seeds.

    Columns ``seeds``, then ``<i>`` and ``<i>_ci95`` for the i-th column; a column no run has is all NaN.
    """
    ok = runs[runs["status"] == "ok"]
    seeds = ok.set_index("run")["seed"]
    values = [run_values(column, curves, ok).reindex(seeds.index) for column in columns]
    rows = {}
    for label, group in ok.groupby("label"):
        row = {"seeds": int(group["seed"].nunique())}
        for index, series in enumerate(values):
            row[str(index)], row[f"{index}_ci95"], _ = seed_ci(series[group["run"]], seeds[group["run"]])
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def training_time(rows: pd.DataFrame) -> pd.Series:
    """Seconds of training at each row's step: step × the run's median step time (probes excluded).

    metrics.csv holds no wall times (it is reproducible from the seed); summary.json's ``step_time_ms``
    turns steps into time.
    """
    return rows["step"] * pd.to_numeric(rows["step_time_ms"], errors="coerce") / 1000


def time_to_target(
    ok: pd.DataFrame, curves: pd.DataFrame, target: float | None = None
) -> tuple[float, bool, pd.DataFrame] | None:
    """Per configuration, how many runs reach ``objective ≤ target`` and after how many steps and seconds.

    The default target is the best level that every configuration's mean curve (over seeds) reaches: the
    largest, over configurations, of the lowest point of the mean curve. (Not the final values: a held-out
    objective can rise again when a model overfits.) Resolution: the objective is measured at probe steps.
    Returns the target, whether it was given, and one row per label (runs, reached, and the mean and 95% CI
    of the steps and seconds over the runs that reach it, and of the step and optimizer times); None
    without an objective curve.
    """
    objective = curves[(curves["metric"] == "objective") & (curves["status"] == "ok")]
    if objective.empty or objective["step"].nunique() < 2 or ok.empty:
        return None
    given = target is not None
    if target is None:
        mean_curves = objective.groupby(["label", "step"])["value"].mean()
        target = float(mean_curves.groupby("label").min().max())
    rows = []
    for label, group in objective.groupby("label"):
        steps, seconds, total = [], [], 0
        for _, run in group.groupby("run"):
            total += 1
            hit = run[run["value"] <= target].sort_values("step")
            if not hit.empty:
                steps.append(float(hit["step"].iloc[0]))
                seconds.append(float(training_time(hit.iloc[:1]).iloc[0]))
        runs = ok[ok["label"] == label]
        optimizer = runs["optimizer_time_ms"] if "optimizer_time_ms" in runs else pd.Series(dtype=float)
        rows.append(
            {
                "label": label,
                "runs": total,
                "reached": len(steps),
                "steps": mean_ci(pd.Series(steps, dtype=float))[:2],
                "seconds": mean_ci(pd.Series(seconds, dtype=float))[:2],
                "step_time_ms": mean_ci(runs["step_time_ms"])[:2],
                "optimizer_time_ms": mean_ci(optimizer)[:2],
            }
        )
    return target, given, pd.DataFrame(rows)
