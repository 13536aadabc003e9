"""Intervals over seeds: one method for every table and every figure band of the report.

Seeds are the replicates. Runs of the same configuration (label) and seed, e.g. a run redone into another
folder, are averaged per seed first, so an interval's n is always the count of distinct seeds. The interval
is the 95% t-interval of the mean over seeds:

- on the linear scale, "mean ± half-width";
- for positive scale quantities (``SCALE_METRICS``, and any metric a declaration marks ``log: true``) on the
  log scale: the t-interval of the mean of log(value), shown as "geometric mean ×/÷ factor" (factor =
  exp(half-width of the log interval)); such an interval never crosses zero. A scale quantity that is 0 in
  every seed is shown as 0; one with zeros or negative values in some seeds only (no geometric mean) is
  shown as its range over seeds, with the count of such seeds.

Tables (``aggregate``, ``column_table``) and figure bands (``bands``) call ``interval``: a band at a step
and a table's interval of the same values are the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from scipy import stats

from bench.formats.contract import OK
from bench.report.declarations import Column

CONFIDENCE = 0.95

MINIMUM_BAND_SEEDS = 3
"""Fewer seeds than this: figures draw each seed's value and no interval (with two seeds the t-interval is
12.7 standard errors wide and covers the axis); tables still give the interval, with its seed count."""

SCALE_METRICS = (
    "grad_variance",
    "grad_mse",
    "grad_variance_rel",
    "step_time_ms",
    "estimate_time_ms",
    "optimizer_time_ms",
    "probe_time_ms",
    "wall_time_s",
    "estimate_flops",
    "f_evals",
)
"""Contract fields that are positive scale quantities: their intervals are taken on the log scale."""


def on_log_scale(metric: str, declared: bool = False) -> bool:
    """Whether ``metric``'s intervals are on the log scale: a scale quantity, or declared ``log: true``."""
    return declared or metric in SCALE_METRICS


@cache
def t_quantile(count: int) -> float:
    """The 97.5% quantile of Student's t with ``count`` − 1 degrees of freedom (``count`` ≥ 2)."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, count - 1))


@dataclass(frozen=True)
class Interval:
    """A 95% interval over ``count`` seeds: ``center`` (mean, or geometric mean when ``log``), ``low``,
    ``high``. ``mixed``: a log-scale quantity with zero or negative values in that many seeds (then
    ``low``–``high`` is the range over seeds and ``center`` is NaN)."""

    center: float
    low: float
    high: float
    count: int
    log: bool = False
    mixed: int = 0

    @property
    def half_width(self) -> float:
        """high − center on the linear scale; NaN on the log scale or without an interval."""
        return math.nan if self.log else self.high - self.center

    @property
    def factor(self) -> float:
        """high / center on the log scale; NaN on the linear scale or without an interval."""
        if not self.log or not (self.center > 0):
            return math.nan
        return self.high / self.center

    def text(self) -> str:
        """ "mean ± h", "geometric mean ×/÷ f", the value alone for one seed, "—" for none."""
        if self.mixed:
            return f"{self.low:.3g} to {self.high:.3g} (≤ 0 in {self.mixed} of {self.count} seeds)"
        if not math.isfinite(self.center):
            return "—"
        if self.count < 2 or not math.isfinite(self.high) or self.high == self.low:
            return f"{self.center:.4g}"  # one seed, or the same value in every seed
        if self.log:
            return "0" if self.center == 0 else f"{self.center:.4g} ×/÷ {self.factor:.3g}"
        return f"{self.center:.4g} ± {self.half_width:.2g}"


NO_VALUES = Interval(math.nan, math.nan, math.nan, 0)


def finite(values: Iterable[float] | pd.Series | np.ndarray) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    return array[np.isfinite(array)]


def interval(values: Iterable[float] | pd.Series | np.ndarray, log: bool = False) -> Interval:
    """The 95% t-interval over seeds of ``values`` (one per seed; non-finite ones left out), on the log
    scale when ``log`` (module docstring)."""
    array = finite(values)
    count = len(array)
    if count == 0:
        return NO_VALUES
    if log:
        positive = array > 0
        if not positive.all():
            if (array == 0).all():
                return Interval(0.0, 0.0, 0.0, count, log=True)
            return Interval(
                math.nan, float(array.min()), float(array.max()), count, True, int((~positive).sum())
            )
        array = np.log(array)
    center = float(array.mean())
    if count == 1:
        low = high = math.nan
    else:
        half = t_quantile(count) * float(array.std(ddof=1)) / math.sqrt(count)
        low, high = center - half, center + half
    if log:
        return Interval(math.exp(center), math.exp(low), math.exp(high), count, log=True)
    return Interval(center, low, high, count)


def mean_ci(values: pd.Series) -> tuple[float, float, int]:
    """Mean, half-width of the 95% t-interval over seeds, and the count of finite values."""
    found = interval(values)
    return found.center, found.half_width, found.count


def per_seed(values: pd.Series, seeds: pd.Series, log: bool = False) -> pd.Series:
    """``values`` averaged per seed (runs of one seed are one replicate): the geometric mean when ``log``
    and every value of the seed is positive, else the arithmetic mean. Indexed by seed."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").astype(float)
    numbers = numbers.where(np.isfinite(numbers))
    seeds = pd.Series(seeds)
    if seeds.is_unique:  # one run per seed, the usual case: nothing to average
        return pd.Series(numbers.to_numpy(), index=seeds.to_numpy())
    if not log:
        return numbers.groupby(seeds.to_numpy()).mean()

    def combine(group: pd.Series) -> float:
        group = group.dropna()
        if group.empty:
            return math.nan
        return float(np.exp(np.log(group).mean())) if (group > 0).all() else float(group.mean())

    return numbers.groupby(seeds.to_numpy()).agg(combine)


def seed_interval(values: pd.Series, seeds: pd.Series, log: bool = False) -> Interval:
    """``interval`` over seeds of per-run ``values``, runs of one seed averaged first."""
    return interval(per_seed(values, seeds, log), log)


def runs_text(ok: int, total: int) -> str:
    """Runs that finished out of the configuration's runs: "5/5"."""
    return f"{ok}/{total}"


def aggregate(summaries: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Intervals over seeds of summary ``columns`` for every (task, label), over runs with status ok.

    One row per configuration with at least one run: ``task``, ``label``, ``seeds`` (distinct seeds of its
    ok runs), ``runs`` ("ok/total"), ``reference``, and for each column ``<column>`` (the interval's centre),
    ``<column>_low``, ``<column>_high``, ``<column>_ci95`` (half-width; NaN on the log scale) and
    ``<column>_interval`` (the ``Interval``).
    """
    rows = []
    for (task, label), group in summaries.groupby(["task", "label"]):
        ok = group[group["status"] == OK]
        row = {
            "task": task,
            "label": label,
            "seeds": int(ok["seed"].nunique()),
            "runs": runs_text(len(ok), len(group)),
            "reference": (ok if not ok.empty else group)["reference"].iloc[0],
        }
        for column in columns:
            if column in group:
                found = seed_interval(ok[column], ok["seed"], on_log_scale(column))
                row.update(interval_fields(column, found))
        rows.append(row)
    return pd.DataFrame(rows)


def interval_fields(name: str, found: Interval) -> dict[str, object]:
    return {
        name: found.center,
        f"{name}_low": found.low,
        f"{name}_high": found.high,
        f"{name}_ci95": found.half_width,
        f"{name}_interval": found,
    }


def geometric_mean(values: pd.Series) -> float:
    """exp(mean log) of the finite values when all are positive; 0 when all are 0; NaN when there are none,
    or some are negative; with zeros among positive values, 0 (a zero factor)."""
    array = finite(values)
    if len(array) == 0 or (array < 0).any():
        return math.nan
    if (array == 0).any():
        return 0.0
    if (array == array[0]).all():
        return float(array[0])  # exactly, not exp(log(x)) up to rounding
    return float(np.exp(np.log(array).mean()))


def run_values(column: Column, curves: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Per run (index: ``run``), the value a table column shows (``declarations.VALUES``); "training" is the
    geometric mean over the probes for a log-scale column."""
    if column.value == "summary":
        values = runs.set_index("run")[column.metric] if column.metric in runs else None
        return pd.Series(dtype=float) if values is None else pd.to_numeric(values, errors="coerce")
    data = curves[(curves["metric"] == column.metric) & curves["value"].notna()]
    if column.value == "last":
        return data.sort_values("step").groupby("run")["value"].last()
    if column.value == "training":
        later = data[data["step"] > 0].groupby("run")["value"]
        return later.agg(geometric_mean) if on_log_scale(column.metric, column.log) else later.mean()
    return data[data["step"] == 0].groupby("run")["value"].mean()


def column_table(columns: tuple[Column, ...], curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per label: seeds, runs ("ok/total"), and for each column the interval over seeds of its ok runs.

    Columns ``seeds``, ``runs``, then ``<i>`` (the ``Interval``) for the i-th column; a column no run has
    holds intervals of no values.
    """
    ok = runs[runs["status"] == OK]
    seeds = ok.set_index("run")["seed"]
    values = [run_values(column, curves, ok).reindex(seeds.index) for column in columns]
    rows = {}
    for label, group in runs.groupby("label"):
        finished = group[group["status"] == OK]
        row: dict[str, object] = {
            "seeds": int(finished["seed"].nunique()),
            "runs": runs_text(len(finished), len(group)),
        }
        for index, (column, series) in enumerate(zip(columns, values, strict=True)):
            log = on_log_scale(column.metric, column.log)
            row[str(index)] = seed_interval(series[finished["run"]], seeds[finished["run"]], log)
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def bands(data: pd.DataFrame, position: str, log: bool = False) -> pd.DataFrame:
    """The band a figure draws: per ``label`` and ``position`` (e.g. ``step``), the interval over seeds of
    ``value`` (runs of one seed averaged first), as columns ``center``, ``low``, ``high``, ``seeds``."""
    columns = ["label", position, "center", "low", "high", "seeds"]
    if data.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (label, where), group in data.groupby(["label", position], sort=True):
        found = seed_interval(group["value"], group["seed"], log)
        rows.append((label, where, found.center, found.low, found.high, found.count))
    return pd.DataFrame(rows, columns=columns)


def training_time(rows: pd.DataFrame) -> pd.Series:
    """Seconds of training at each row's step: step × the run's median step time (probes excluded).

    metrics.csv holds no wall times (it is reproducible from the seed); summary.json's ``step_time_ms``
    turns steps into time.
    """
    return rows["step"] * pd.to_numeric(rows["step_time_ms"], errors="coerce") / 1000


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (familywise error), NaN kept where a p-value is missing."""
    values = np.asarray(list(p_values), dtype=float)
    adjusted = np.full(values.shape, math.nan)
    present = np.flatnonzero(np.isfinite(values))
    if len(present) == 0:
        return adjusted
    order = present[np.argsort(values[present], kind="stable")]
    count = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * values[index]))
        adjusted[index] = running
    return adjusted
