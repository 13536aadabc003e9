"""Time to target as time to an event: runs that never reach the target are censored, not dropped.

The curve: ``validation_objective`` where the task's runs record it, else ``objective``. The target is fixed
before the runs are looked at: given (``--target TASK=VALUE``), or a stated fraction (default 0.9) of the gap
between the initial value (step 0, mean over the finished runs) and the task's best known value (the
summary field ``best_known_objective``, else ``best_known`` in the task's report declaration). Without
either, there is no target, and the report says to give one.

A run reaches the target at the first probe where its curve is at or below it; the time is interpolated
linearly between that probe and the one before (training time = step × the run's median step time, probes
excluded). A run that never reaches it is censored at its last probe's time (a run that stopped early, at
the probe before it stopped). Per configuration: the Kaplan–Meier estimate of the fraction that has reached
the target by each time (a plain proportion with its Clopper–Pearson interval while no run has been censored
yet; after that, while none has reached it, 0 up to the Clopper–Pearson bound from the runs still observed),
and its median time with the 95% interval of lifelines (exponential Greenwood bands; an upper limit
of ∞ when the band never falls below one half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.formats.contract import OK
from bench.report.statistics import training_time

DEFAULT_FRACTION = 0.9


@dataclass
class Target:
    """The time-to-target level of a task (``value``; None: none could be fixed), the curve it applies to
    (``metric``) and where it comes from (``source``)."""

    value: float | None
    metric: str
    source: str


def curve_metric(curves: pd.DataFrame) -> str:
    """``validation_objective`` where runs record it, else ``objective``."""
    recorded = set(curves.loc[curves["value"].notna(), "metric"])
    return "validation_objective" if "validation_objective" in recorded else "objective"


def best_known_value(runs: pd.DataFrame, declared: float | None) -> tuple[float | None, str]:
    """The best known value: the summaries' ``best_known_objective``, else the declaration's."""
    if "best_known_objective" in runs:
        known = pd.to_numeric(runs["best_known_objective"], errors="coerce").dropna()
        if not known.empty:
            return float(known.median()), "best_known_objective of the runs' summaries"
    if declared is not None:
        return float(declared), "best_known in the task's report declaration"
    return None, ""


def choose_target(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    given: float | None,
    fraction: float = DEFAULT_FRACTION,
    declared_best: float | None = None,
) -> Target:
    """The target for a task's ``runs`` (all statuses) and ``curves`` (module docstring)."""
    metric = curve_metric(curves)
    if given is not None:
        return Target(float(given), metric, "given on the command line")
    best, origin = best_known_value(runs, declared_best)
    finished = runs.loc[runs["status"] == OK, "run"]
    start = curves[(curves["metric"] == metric) & (curves["step"] == 0) & curves["run"].isin(finished)]
    start = start["value"].dropna()
    if best is None or start.empty:
        reason = "no best known value" if best is None else f"no {metric} at step 0"
        return Target(None, metric, reason)
    initial = float(start.mean())
    value = initial - fraction * (initial - best)
    source = (
        f"{fraction:.0%} of the way from the initial {metric} ({initial:.4g}, step 0, mean over "
        f"{len(start)} runs) to the best known value {best:.4g} ({origin})"
    )
    return Target(value, metric, source)


def crossing_time(times: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """The first time the curve is at or below ``target``, interpolated linearly between the probe that
    reaches it and the one before; None when it never does."""
    below = np.flatnonzero(values <= target)
    if len(below) == 0:
        return None
    first = int(below[0])
    if first == 0:
        return float(times[0])
    t0, t1, v0, v1 = times[first - 1], times[first], values[first - 1], values[first]
    return float(t0 + (v0 - target) / (v0 - v1) * (t1 - t0))


def events(curves: pd.DataFrame, metric: str, target: float) -> pd.DataFrame:
    """Per run with a curve and a step time: ``label``, ``seed``, ``status``, ``time`` (of reaching the
    target, or of censoring) and ``reached``."""
    data = curves[(curves["metric"] == metric) & curves["value"].notna()].copy()
    data["time"] = training_time(data)
    data = data[data["time"].notna()]
    rows = []
    for (run, label), group in data.groupby(["run", "label"], sort=True):
        group = group.sort_values("step")
        times, values = group["time"].to_numpy(float), group["value"].to_numpy(float)
        reached = crossing_time(times, values, target)
        rows.append(
            {
                "run": run,
                "label": label,
                "seed": group["seed"].iloc[0],
                "status": group["status"].iloc[0],
                "time": reached if reached is not None else float(times[-1]),
                "reached": reached is not None,
            }
        )
    return pd.DataFrame(rows, columns=["run", "label", "seed", "status", "time", "reached"])


@dataclass
class KaplanMeier:
    """One configuration's Kaplan–Meier fit: ``timeline`` with the fraction reached (``reached``) and its
    95% band (``low``, ``high``), the median time with its 95% interval, and the runs' ``times`` and
    ``events`` (reached, or censored)."""

    timeline: np.ndarray
    reached: np.ndarray
    low: np.ndarray
    high: np.ndarray
    median: float
    median_low: float
    median_high: float
    times: np.ndarray
    events: np.ndarray

    def fraction_by(self, time: float) -> tuple[float, float, float]:
        """Fraction reached by ``time`` and its 95% interval. While no run is censored before ``time`` the
        fraction is a plain proportion k/n, with the Clopper–Pearson interval (Greenwood's band has no width
        at 0 or 1); after that, the Kaplan–Meier estimate with lifelines' band, or, while it is still 0, the
        Clopper–Pearson bound from the runs still observed."""
        if not ((~self.events) & (self.times < time)).any():
            count = int((self.events & (self.times <= time)).sum())
            total = len(self.times)
            low, high = stats.binomtest(count, total).proportion_ci(0.95, method="exact")
            return count / total, float(low), float(high)
        index = int(np.searchsorted(self.timeline, time, side="right")) - 1
        fraction = float(self.reached[index]) if index >= 0 else 0.0
        if fraction == 0:
            # No run has reached it yet: Greenwood's band has no width; the runs still observed at ``time``
            # bound the fraction from above (Clopper–Pearson for 0 of them); none left: anything is possible.
            observed = int((self.times >= time).sum())
            high = (
                1.0
                if observed == 0
                else float(stats.binomtest(0, observed).proportion_ci(0.95, "exact").high)
            )
            return 0.0, 0.0, high
        return fraction, float(self.low[index]), float(self.high[index])


def kaplan_meier(times: np.ndarray, reached: np.ndarray) -> KaplanMeier:
    """The Kaplan–Meier fit of times to the event (``reached`` true) or to censoring (false)."""
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    times, reached = np.asarray(times, float), np.asarray(reached, bool)
    fitter = KaplanMeierFitter().fit(times, reached)
    survival = fitter.survival_function_.iloc[:, 0].to_numpy()
    band = fitter.confidence_interval_.to_numpy()  # columns: lower, upper band of the survival
    limits = median_survival_times(fitter.confidence_interval_).to_numpy().ravel()
    return KaplanMeier(
        timeline=fitter.survival_function_.index.to_numpy(float),
        reached=1 - survival,
        low=1 - band[:, 1],
        high=1 - band[:, 0],
        median=float(fitter.median_survival_time_),
        median_low=float(limits[0]),
        median_high=float(limits[1]),
        times=times,
        events=reached,
    )


def seconds_text(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3g}"


def censoring_text(group: pd.DataFrame) -> str:
    """ "3/5 reached; 2 censored at 12.4 s" (and the statuses of runs that stopped early)."""
    reached = int(group["reached"].sum())
    censored = group[~group["reached"]]
    text = f"{reached}/{len(group)} reached"
    if not censored.empty:
        times = ", ".join(seconds_text(time) for time in sorted(censored["time"].round(12).unique()))
        text += f"; {len(censored)} censored at {times} s"
        stopped = censored[censored["status"] != OK]
        if not stopped.empty:
            text += (
                " ("
                + ", ".join(f"{count} {status}" for status, count in stopped["status"].value_counts().items())
                + ")"
            )
    return text


def report_times(found: pd.DataFrame, count: int = 4) -> list[float]:
    """Up to ``count`` times for the fraction-reached columns: log-spaced from the first event to the
    last observation, two significant digits."""
    event_times = found.loc[found["reached"] & (found["time"] > 0), "time"]
    if event_times.empty:
        return []
    start, end = float(event_times.min()), float(found["time"].max())
    grid = np.geomspace(start, end, count) if end > start else np.array([start])
    rounded = sorted({float(f"{time:.2g}") for time in grid})
    return rounded
