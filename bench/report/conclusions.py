"""The Conclusions paragraph at the top of a task's section: what its numbers support, and what they do not.

Generated from the section's own tables, sentence by sentence:

- the best configuration by final objective, with its 95% interval over seeds, and whether the comparison
  is at equal cost (evaluations of f per estimate);
- the configurations not significantly different from it (paired over seeds, Holm-adjusted over the
  ranking's comparisons), and the cheapest of those when it is cheaper than the best;
- those significantly worse, with the paired difference and its interval;
- the bias verdicts (the table's own family of tests): the choices without detectable bias, and what not to
  use (biased and significantly worse);
- the caveats: unequal cost within the ranking, fewer than 5 seeds, identical results, draws that do not
  vary at the probe point, and an objective still falling at the last probe.

No sentence claims a difference that its paired interval does not support: "worse" needs a Holm-adjusted
p below 0.05 *and* an interval that excludes zero; everything else is "not significantly different".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.05
MINIMUM_SEEDS = 5


def label_list(labels: list[str]) -> str:
    quoted = [f"`{label}`" for label in labels]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def versus_best(ranking: Any, best: str) -> dict[str, dict[str, float]]:
    """Per other configuration: its final objective minus the best's (mean over seeds, 95% interval), and
    the Holm-adjusted p of the paired test."""
    found = {}
    for row in ranking.pairs.itertuples(index=False):
        if best not in (row.a, row.b):
            continue
        other, sign = (row.b, -1.0) if row.a == best else (row.a, 1.0)
        low, high = sorted((sign * row.ci_low, sign * row.ci_high))
        found[other] = {"difference": sign * row.estimate, "low": low, "high": high, "p_holm": row.p_holm}
    return found


def still_falling(
    curves: pd.DataFrame, runs: pd.Series, metric: str = "objective"
) -> tuple[float, float] | None:
    """Slope of ``metric`` over the last half of each run's probes (runs pooled, each with an intercept of
    its own) and its one-sided p-value (slope < 0); None with too few points."""
    xs, ys = [], []
    part = curves[(curves["metric"] == metric) & curves["run"].isin(runs)]
    for _, run in part.groupby("run"):
        points = run.sort_values("step")[["step", "value"]].to_numpy(dtype=float)
        points = points[np.isfinite(points[:, 1])]
        tail = points[len(points) // 2 :]
        if len(tail) < 3:
            continue
        xs.append(tail[:, 0] - tail[:, 0].mean())
        ys.append(tail[:, 1] - tail[:, 1].mean())
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(x) < 6 or not (x**2).sum():
        return None
    slope = float((x * y).sum() / (x**2).sum())
    residual = float(((y - slope * x) ** 2).sum())
    freedom = len(x) - 1 - len(xs)
    if freedom <= 0 or residual <= 0:
        return slope, 0.0 if slope < 0 else 1.0
    error = math.sqrt(residual / freedom / float((x**2).sum()))
    return slope, float(stats.t.cdf(slope / error, freedom))


def identical_groups(ok: pd.DataFrame) -> list[list[str]]:
    """Configurations whose final objectives are equal on every seed they share (two or more seeds)."""
    table = ok.pivot_table(index="seed", columns="label", values="final_loss", aggfunc="mean")
    groups: list[list[str]] = []
    seen: set[str] = set()
    for first in table.columns:
        if first in seen:
            continue
        group = [first]
        for second in table.columns:
            if second == first or second in seen:
                continue
            both = table[[first, second]].dropna()
            if len(both) >= 2 and (both[first] == both[second]).all():
                group.append(second)
        if len(group) > 1:
            groups.append(group)
            seen.update(group)
    return groups


def conclusions(analysis: Any, rankings: list[Any]) -> list[str]:
    """The paragraph (Markdown lines) for one task's section (module docstring)."""
    ok = analysis.ok
    if ok.empty:
        return ["**Conclusions.** No run finished: nothing to conclude.", ""]
    sentences: list[str] = []
    caveats: list[str] = []
    labels = sorted(ok["label"].unique())
    cost = (
        pd.to_numeric(ok["f_evals"], errors="coerce").groupby(ok["label"]).median()
        if "f_evals" in ok
        else pd.Series(dtype=float)
    )
    cost = cost[np.isfinite(cost)]
    unequal = cost.nunique() > 1
    final = next((ranking for ranking in rankings if ranking.metric == "final_loss"), None)
    worse: dict[str, dict[str, float]] = {}
    if len(labels) == 1:
        sentences.append(f"Only one configuration (`{labels[0]}`): nothing to compare.")
    elif final is None:
        sentences.append("No ranking on the final objective: fewer than two seeds in common.")
    else:
        best = str(final.table["label"].iloc[0])
        interval = final.table["interval"].iloc[0]
        seeds = len(final.seeds)
        at_cost = (
            f" at equal cost ({int(cost.iloc[0])} evaluation(s) of f per estimate)"
            if len(cost) and not unequal
            else ""
        )
        sentences.append(
            f"Best final objective{at_cost}: `{best}`, {interval.text()} (95% interval over {seeds} seeds)."
        )
        compared = versus_best(final, best)
        ties = [label for label, row in compared.items() if not (row["p_holm"] < LEVEL and row["low"] > 0)]
        worse = {label: row for label, row in compared.items() if label not in ties}
        if ties:
            verb = "is" if len(ties) == 1 else "are"
            sentences.append(
                f"{label_list(ties)} {verb} not significantly different from it (paired over seeds, "
                "Holm-adjusted over this ranking's comparisons)."
            )
            if len(cost) and best in cost:
                cheaper = [label for label in ties if label in cost and cost[label] < cost[best]]
                if cheaper:
                    cheapest = min(cheaper, key=lambda label: cost[label])
                    sentences.append(
                        f"The cheapest of those is `{cheapest}`: {cost[cheapest]:.3g} evaluation(s) of f per "
                        f"estimate against {cost[best]:.3g}."
                    )
        if worse:
            listed = "; ".join(
                f"`{label}` (+{row['difference']:.3g} [{row['low']:.3g}, {row['high']:.3g}])"
                for label, row in sorted(worse.items(), key=lambda item: item[1]["difference"])
            )
            sentences.append(f"Significantly worse than `{best}` (difference in final objective): {listed}.")
        if seeds < MINIMUM_SEEDS:
            caveats.append(
                f"only {seeds} seeds: intervals are wide, and a difference this table does not support may "
                "still exist"
            )
        falling = still_falling(analysis.curves, ok.loc[ok["label"] == best, "run"])
        if falling is not None and falling[1] < LEVEL:
            caveats.append(
                f"the objective of `{best}` is still falling at its last probes (slope {falling[0]:.3g} per "
                f"step, one-sided p = {falling[1]:.2g}): with more steps the ranking may change"
            )
    verdicts = analysis.verdicts
    if verdicts is not None:
        unbiased = [
            label for label in labels if verdicts.tested.get(label) and not verdicts.rejected.get(label)
        ]
        biased = [label for label in labels if verdicts.rejected.get(label)]
        if unbiased:
            sentences.append(f"No detectable bias ({verdicts.family}): {label_list(unbiased)}.")
        if biased:
            avoid = [label for label in biased if label in worse]
            kept = [label for label in biased if label not in worse]
            if avoid:
                costs = " at these costs" if unequal else ""
                sentences.append(
                    f"Not to use here{costs}: {label_list(avoid)}, biased (the test rejects zero bias) and "
                    "significantly worse."
                )
            if kept:
                sentences.append(
                    f"Biased, but not significantly worse at this budget: {label_list(kept)} (a biased "
                    "gradient can stall where an unbiased one keeps improving: see the curves)."
                )
    elif analysis.reference == "none":
        sentences.append("The task has no reference gradient: bias is not measured.")
    if unequal:
        low, high = cost.idxmin(), cost.idxmax()
        caveats.append(
            f"unequal cost: evaluations of f per estimate range from {cost[low]:.3g} (`{low}`) to "
            f"{cost[high]:.3g} (`{high}`), so the final objectives are not compared at equal cost (S differs)"
        )
    for group in identical_groups(ok):
        caveats.append(f"{label_list(group)} gave identical final objectives on every seed")
    if analysis.deterministic:
        caveats.append(
            f"the draws of {label_list(sorted(analysis.deterministic))} do not vary at the probe point "
            "(deterministic there): their gradient statistics rank them at other points, not there"
        )
    lines = ["**Conclusions.** " + " ".join(sentences)]
    if caveats:
        lines += ["", "Caveats: " + "; ".join(caveats) + "."]
    return [*lines, ""]
