"""Rankings paired over seeds, pairwise comparisons with Holm-adjusted p-values, and the critical-difference
diagram across tasks.

Runs of one seed share their initialisation and data, so configurations are compared seed by seed, over
the seeds every ranked configuration has (``common seeds``). Scale quantities are compared on the log scale.

- Rank: of each configuration's mean over the common seeds (1 = lowest). Rank interval: the 2.5% and
  97.5% quantiles of its rank over ``RESAMPLES`` bootstrap resamples of the common seeds (seeds drawn with
  replacement, every configuration's values of a seed kept together); with fewer than ``MINIMUM_SEEDS``
  seeds none is given.
- Pairs: for every two configurations a, b, the mean over seeds of the difference a − b (log scale: the
  ratio a / b, the exponential of the mean log difference) with its 95% t-interval and the p-value of the
  paired t-test, both unadjusted (the pair on its own: the interval excludes no-difference exactly when
  p < 0.05), and that p-value Holm-adjusted over the pairs of one (task, metric), ``p_holm``, which has no
  interval of its own (Holm's step-down adjustment has no matching simultaneous interval). Tables print
  the interval beside the unadjusted p and name the Holm column apart. ``comparisons.csv`` holds them, with
  columns ``COMPARISON_COLUMNS``.
- Critical difference (autorank: Friedman test, then Nemenyi's critical difference): only where at least
  ``MINIMUM_TASKS`` tasks share the same estimators.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.formats.contract import OK
from bench.report.statistics import holm, interval, per_seed, t_quantile

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MINIMUM_SEEDS = 5
MINIMUM_TASKS = 5
COMPARISON_COLUMNS = ("task", "metric", "a", "b", "estimate", "ci_low", "ci_high", "p", "p_holm")
TOO_FEW_SEEDS = "too few seeds for rank intervals"


@dataclass
class Ranking:
    """A paired ranking of configurations on one metric (``table``: one row per configuration, best first:
    ``label``, ``rank``, ``rank_low``, ``rank_high``, ``interval``) and its pairwise comparisons
    (``pairs``, ``COMPARISON_COLUMNS``). ``seeds``: the common seeds; ``left_out``: configurations without
    a value at every common seed."""

    metric: str
    log: bool
    seeds: list
    table: pd.DataFrame
    pairs: pd.DataFrame
    left_out: list[str] = field(default_factory=list)

    @property
    def rank_intervals(self) -> bool:
        return len(self.seeds) >= MINIMUM_SEEDS


def seed_matrix(values: pd.DataFrame, log: bool) -> tuple[pd.DataFrame, list[str]]:
    """Seeds × labels of ``values`` (columns ``label``, ``seed``, ``value``; runs of one seed averaged),
    over the seeds every label has; labels that would leave fewer than 2 common seeds are dropped
    (returned second)."""
    columns = {
        label: per_seed(group["value"], group["seed"], log)
        for label, group in values.groupby("label", sort=True)
    }
    matrix = pd.DataFrame(columns)
    if log:
        matrix = matrix.where(matrix > 0)
    left_out = []
    while not matrix.empty and len(matrix.dropna()) < 2 and matrix.shape[1] > 0:
        # Drop the configuration with the fewest seeds until two seeds are common to the rest.
        weakest = matrix.notna().sum().idxmin()
        left_out.append(weakest)
        matrix = matrix.drop(columns=weakest)
    return matrix.dropna(), left_out


def ranks_of(means: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = lowest; ties get their mean rank."""
    return stats.rankdata(means, axis=-1)


def paired_difference(first: np.ndarray, second: np.ndarray) -> tuple[float, float, float, float]:
    """Mean of first − second over seeds, its 95% t-interval and the paired t-test's two-sided p-value."""
    differences = first - second
    count = len(differences)
    mean = float(differences.mean())
    spread = float(differences.std(ddof=1)) if count > 1 else math.nan
    if count < 2:
        return mean, math.nan, math.nan, math.nan
    if spread == 0:
        return mean, mean, mean, (1.0 if mean == 0 else 0.0)
    half = t_quantile(count) * spread / math.sqrt(count)
    statistic = mean / (spread / math.sqrt(count))
    p_value = float(2 * stats.t.sf(abs(statistic), count - 1))
    return mean, mean - half, mean + half, p_value


def rank(task: str, metric: str, values: pd.DataFrame, log: bool) -> Ranking | None:
    """The paired ranking of ``values`` (columns ``label``, ``seed``, ``value``; lower is better); None
    with fewer than two configurations or two common seeds."""
    matrix, left_out = seed_matrix(values, log)
    if matrix.shape[1] < 2 or len(matrix) < 2:
        return None
    data = np.log(matrix.to_numpy()) if log else matrix.to_numpy()
    labels = list(matrix.columns)
    point = ranks_of(data.mean(0))
    low = high = np.full(len(labels), math.nan)
    if len(matrix) >= MINIMUM_SEEDS:
        generator = np.random.default_rng(BOOTSTRAP_SEED)
        picks = generator.integers(0, len(matrix), size=(RESAMPLES, len(matrix)))
        resampled = ranks_of(data[picks].mean(1))
        low = np.floor(np.quantile(resampled, 0.025, axis=0))
        high = np.ceil(np.quantile(resampled, 0.975, axis=0))
    table = pd.DataFrame(
        {
            "label": labels,
            "rank": point,
            "rank_low": low,
            "rank_high": high,
            "interval": [interval(matrix[label], log) for label in labels],
        }
    )
    table = table.sort_values(["rank", "label"], kind="stable").reset_index(drop=True)
    order = table["label"].tolist()
    rows = []
    for index, first in enumerate(order):
        for second in order[index + 1 :]:
            a, b = data[:, labels.index(first)], data[:, labels.index(second)]
            estimate, ci_low, ci_high, p_value = paired_difference(a, b)
            if log:
                estimate, ci_low, ci_high = math.exp(estimate), math.exp(ci_low), math.exp(ci_high)
            rows.append((task, metric, first, second, estimate, ci_low, ci_high, p_value, p_value))
    pairs = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    pairs["p_holm"] = holm(pairs["p"])
    return Ranking(metric, log, list(matrix.index), table, pairs, left_out)


def rank_text(row: pd.Series, ranking: Ranking) -> str:
    """ "1–3" (bootstrap interval over seeds), or the reason there is none."""
    if not ranking.rank_intervals:
        return TOO_FEW_SEEDS
    low, high = int(row["rank_low"]), int(row["rank_high"])
    return f"{low}" if low == high else f"{low}–{high}"


def write_comparisons(rankings: list[Ranking], path: Path) -> None:
    """Every pairwise comparison of every ranking into ``path`` (``COMPARISON_COLUMNS``)."""
    frames = [ranking.pairs for ranking in rankings if not ranking.pairs.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    table.to_csv(path, index=False)


@dataclass
class SharedEstimators:
    """The largest set of tasks that share a set of estimators (at least two), with one value per task and
    estimator (``table``: tasks × estimators)."""

    tasks: list[str]
    estimators: list[str]
    table: pd.DataFrame


def shared_estimators(summaries: pd.DataFrame, metric: str = "final_loss") -> SharedEstimators:
    """Tasks (with one configuration per estimator) and the estimators every one of them ran to the end:
    the estimators found in the most tasks, and the tasks having all of them."""
    ok = summaries[summaries["status"] == OK]
    per_task = {}
    for task, group in ok.groupby("task"):
        if group.groupby("estimator")["label"].nunique().max() > 1:
            continue  # several configurations of one estimator: no single value per estimator
        per_task[task] = group.groupby("estimator").apply(
            lambda runs: per_seed(runs[metric], runs["seed"]).mean(), include_groups=False
        )
    counts = pd.Series([name for values in per_task.values() for name in values.index]).value_counts()
    best = SharedEstimators([], [], pd.DataFrame())
    for needed in sorted(set(counts), reverse=True):
        estimators = sorted(counts[counts >= needed].index)
        tasks = sorted(task for task, values in per_task.items() if set(estimators) <= set(values.index))
        if len(estimators) >= 2 and len(tasks) > len(best.tasks):
            table = pd.DataFrame({task: per_task[task][estimators] for task in tasks}).T
            best = SharedEstimators(tasks, estimators, table.dropna(axis=1))
    return best


def critical_difference(shared: SharedEstimators, directory: Path, stem: str = "critical_difference") -> str:
    """The critical-difference diagram of ``shared`` (lower value = better) into ``stem``.png/.pdf; returns
    the PNG's name."""
    from autorank import autorank, plot_stats

    from bench.report.figures import write_files

    # autorank ranks higher values as better with order="descending"; the objective is lower-is-better.
    # autorank prints its choice of tests and warns from normality tests it then does not use.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = autorank(-shared.table, alpha=0.05, verbose=False, force_mode="nonparametric")
        axis = plot_stats(result, allow_insignificant=True)
    figure = axis.get_figure()
    figure.suptitle(
        f"final objective across {len(shared.tasks)} tasks: mean rank (1 = best), critical difference\n"
        f"(Nemenyi, 5%); Friedman p = {result.pvalue:.2g}; a bar joins estimators that do not differ",
        fontsize=9,
        y=1.15,
    )
    return write_files(figure, directory, stem)
