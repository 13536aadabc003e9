"""Gradient quality between configurations: where it is compared, the bias test's verdicts, and the
mean squared error at a compute budget.

Where. Gradient statistics are compared between configurations at the same parameters
(``docs/design.md``, "Where an estimator is measured"): at step 0, where every configuration of a seed
starts from the same initialisation, when every run probed step 0; otherwise at each run's last probe, which
the report then says.

Bias verdicts. Each probe of each finished run gives ``grad_bias_p``, the p-value of the test of zero bias
(``bench.run.probe.statistics``). A verdict belongs to the table it appears in: the family adjusted by
Holm's step-down method is every probe of every finished run of the configurations of that table (the runs
the caller passes), never more, so that a table's verdicts do not change when another table (another
study, another task) is added beside it. A configuration is "biased at 5%" when at least one of its probes
rejects after adjustment, so the chance that any unbiased configuration of the table is called biased is at
most 5% (whatever the dependence between probes), as far as the p-values hold their size. Configurations
whose draws do not vary (``exact``) have no p-value.

Budget. Averaging K = T/t independent estimates that cost t each (``estimate_time_ms``, or ``f_evals``
for equal evaluations of f) within a budget T leaves the bias and divides the variance by K:
MSE(T) = ‖b‖² + V·t/T for T ≥ t, and no estimate at all for T < t. ‖b‖² is the probe's unbiased
``grad_bias_sq`` (``grad_bias_rel`` relative to ‖g*‖²), counted as 0 where it is negative. A configuration
whose draws do not vary has MSE(T) = 0 from T = t on: it is ranked by its cost, not by 0 × t/T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.formats.contract import PROBE_FIELDS
from bench.report.statistics import geometric_mean, holm, interval

LEVEL = 0.05
COSTS = {
    "estimate_time_ms": ("time", "ms", "estimate_time_ms, median forward and backward of one estimate"),
    "f_evals": ("f evaluations", "evaluations of f", "f_evals, evaluations of f per data point"),
}
"""The costs of one estimate that budgets are stated in: field → (name, unit, meaning)."""


@dataclass
class ProbePoint:
    """The probe fields of every finished run at the point where configurations are compared.

    ``values``: one row per ok run (``run``, ``label``, ``seed``, the probe fields, ``estimate_time_ms``,
    ``f_evals``, ``probe_draws``); ``where``: "step 0" or "the last probe"; ``same_parameters``: whether
    every configuration of a seed is measured at the same parameters there.
    """

    values: pd.DataFrame
    where: str
    same_parameters: bool

    @property
    def title(self) -> str:
        return "step 0" if self.same_parameters else "end"


def probe_point(ok: pd.DataFrame, curves: pd.DataFrame) -> ProbePoint:
    """The probe fields at step 0 when every ok run probed step 0, else at each run's last probe."""
    carried = [
        name for name in ("run", "label", "seed", "estimate_time_ms", "f_evals", "probe_draws") if name in ok
    ]
    base = ok[carried].copy()
    probes = curves[curves["metric"].isin(PROBE_FIELDS) & curves["run"].isin(ok["run"])]
    at_zero = probes[probes["step"] == 0]
    zero_runs = set(at_zero.loc[at_zero["metric"] == "grad_variance", "run"])
    if not ok.empty and zero_runs >= set(ok["run"]):
        wide = at_zero.pivot_table(index="run", columns="metric", values="value", aggfunc="first")
        values = base.merge(
            wide.reindex(columns=list(PROBE_FIELDS)), left_on="run", right_index=True, how="left"
        )
        return ProbePoint(values, "step 0, where every configuration of a seed has the same parameters", True)
    fields = ok.reindex(columns=list(PROBE_FIELDS)).apply(pd.to_numeric, errors="coerce")
    values = pd.concat([base, fields], axis=1)
    return ProbePoint(values, "the last probe of each run (configurations at different parameters)", False)


def deterministic_labels(point: ProbePoint, reference: str) -> set[str]:
    """Configurations whose draws do not vary: a reference exists, yet no run has a bias p-value, and the
    variance is finite."""
    if reference == "none" or "grad_bias_p" not in point.values:
        return set()
    found = set()
    for label, group in point.values.groupby("label"):
        variance = pd.to_numeric(group["grad_variance"], errors="coerce")
        if group["grad_bias_p"].isna().all() and variance.notna().all():
            found.add(label)
    return found


@dataclass
class BiasVerdicts:
    """Per configuration, the bias test's verdict over its probes (Holm over the probes of the table)."""

    text: dict[str, str]
    probes: int
    rejected: dict[str, int]
    tested: dict[str, int]
    tests: pd.DataFrame
    """Every test: ``run``, ``label``, ``step``, ``value`` (the p-value), ``adjusted`` (Holm)."""

    @property
    def family(self) -> str:
        """The family the adjustment is over, as a table's note names it."""
        return f"Holm over the {self.probes} probes of this table"

    def at_point(self, same_parameters: bool) -> dict[str, tuple[int, int]]:
        """Per configuration, (rejected, tested) among the probes at the comparison point: step 0, or each
        run's last probe."""
        tests = self.tests
        if same_parameters:
            chosen = tests[tests["step"] == 0]
        else:
            chosen = tests[tests["step"] == tests.groupby("run")["step"].transform("max")]
        rejected = chosen["adjusted"] < LEVEL
        return {
            label: (int(rejected[group.index].sum()), len(group)) for label, group in chosen.groupby("label")
        }


def bias_verdicts(ok: pd.DataFrame, curves: pd.DataFrame, deterministic: set[str]) -> BiasVerdicts | None:
    """The verdicts of the table whose rows are the runs ``ok`` (finished runs): Holm over ``grad_bias_p``
    at every probe of those runs, and of no other run in ``curves`` (module docstring); None when no probe
    has a p-value."""
    found = curves[
        (curves["metric"] == "grad_bias_p") & curves["run"].isin(ok["run"]) & curves["value"].notna()
    ].copy()
    if found.empty:
        return None
    found["adjusted"] = holm(found["value"])
    text, rejected, tested = {}, {}, {}
    for label in sorted(ok["label"].unique()):
        mine = found[found["label"] == label]
        if mine.empty:
            if label in deterministic:
                text[label] = "none possible (draws do not vary)"
            continue
        tested[label] = len(mine)
        rejecting = mine[mine["adjusted"] < LEVEL]
        rejected[label] = len(rejecting)
        if rejected[label]:
            text[label] = (
                f"biased at 5% ({rejected[label]} of {len(mine)} probes, {steps_text(rejecting['step'])})"
            )
        else:
            text[label] = f"no detectable bias (0 of {len(mine)} probes)"
    return BiasVerdicts(
        text, len(found), rejected, tested, found[["run", "label", "step", "value", "adjusted"]]
    )


def steps_text(steps: pd.Series) -> str:
    """ "step 500", "steps 0, 100", or "steps 0 to 500" for more than three."""
    found = sorted({int(step) for step in steps})
    if len(found) == 1:
        return f"step {found[0]}"
    if len(found) <= 3:
        return "steps " + ", ".join(str(step) for step in found)
    return f"steps {found[0]} to {found[-1]}"


def relative_scale(point: ProbePoint) -> bool:
    """Whether the relative fields (÷ ‖g*‖²) exist in every run at the point."""
    values = point.values
    return all(
        name in values and pd.to_numeric(values[name], errors="coerce").notna().all()
        for name in ("grad_bias_rel", "grad_variance_rel")
    )


def error_parts(point: ProbePoint, deterministic: set[str]) -> pd.DataFrame:
    """Per run: ``bias`` (‖b‖², counted as 0 where the estimate is negative; relative to ‖g*‖² where every
    run has the relative fields, see ``attrs["relative"]``), ``raw_bias`` (the estimate as it is) and
    ``variance`` at the point, with ``label``, ``seed``, ``deterministic`` and the costs (each
    configuration's geometric mean over its runs)."""
    values = point.values
    relative = relative_scale(point)
    bias = pd.to_numeric(values["grad_bias_rel" if relative else "grad_bias_sq"], errors="coerce")
    variance = pd.to_numeric(values["grad_variance_rel" if relative else "grad_variance"], errors="coerce")
    parts = pd.DataFrame(
        {
            "run": values["run"],
            "label": values["label"],
            "seed": values["seed"],
            "bias": bias.clip(lower=0),
            "raw_bias": bias,
            "variance": variance,
            "deterministic": values["label"].isin(deterministic),
        }
    )
    for cost in COSTS:
        measured = (
            pd.to_numeric(values[cost], errors="coerce")
            if cost in values
            else pd.Series(math.nan, values.index)
        )
        # The cost is a property of the configuration (a timing's noise is not the seed's): the geometric
        # mean over its runs.
        parts[cost] = measured.groupby(values["label"]).transform(geometric_mean)
    parts.loc[parts["deterministic"], ["bias", "raw_bias", "variance"]] = 0.0
    parts.attrs["relative"] = relative
    return parts


def mse_at_budget(parts: pd.DataFrame, cost: str, budget: float | np.ndarray) -> np.ndarray:
    """MSE(T) per run (rows of ``parts``) at ``budget`` (a number, or an array of budgets: one column
    each); +inf where one estimate costs more than the budget, NaN where the cost is unknown."""
    budgets = np.atleast_1d(np.asarray(budget, dtype=float))[None, :]
    price = parts[cost].to_numpy(dtype=float)[:, None]
    mse = parts["bias"].to_numpy(dtype=float)[:, None] + parts["variance"].to_numpy(dtype=float)[:, None] * (
        price / budgets
    )
    mse = np.where(price <= budgets, mse, np.inf)
    mse = np.where(np.isfinite(price), mse, np.nan)
    return mse if np.ndim(budget) else mse[:, 0]


def default_budget(parts: pd.DataFrame, cost: str) -> float:
    """The largest cost among the configurations whose draws vary (geometric mean over each one's seeds):
    every sampling configuration affords one estimate."""
    sampling = parts[~parts["deterministic"]]
    costs = sampling.groupby("label")[cost].agg(geometric_mean)
    return float(costs.max()) if costs.notna().any() else math.nan


@dataclass
class Crossing:
    """Two configurations whose MSE(T) curves cross at ``budget``: ``small`` is better below it (or the only
    one affordable), ``large`` above it."""

    small: str
    large: str
    budget: float


def crossings(parts: pd.DataFrame, cost: str) -> tuple[list[Crossing], int]:
    """Budgets at which two configurations' MSE(T) cross, from their means over seeds (‖b‖² arithmetic, V
    geometric; t is already the configuration's): where both exist, and, for a configuration whose draws
    do not vary, at its cost (its MSE is 0 from there on). A crossing of two sampling configurations is
    resolved only where their squared biases differ: the 95% t-interval over common seeds of the paired
    difference of ``raw_bias`` excludes 0. Returns the crossings and the count of pairs left unresolved."""
    means, biases = {}, {}
    for label, group in parts.groupby("label"):
        price = float(group[cost].iloc[0])
        if not math.isfinite(price):
            continue
        deterministic = bool(group["deterministic"].all())
        variance = 0.0 if deterministic else geometric_mean(group["variance"])
        means[label] = (float(group["bias"].mean()), variance, price, deterministic)
        biases[label] = group.groupby("seed")["raw_bias"].mean()
    found, unresolved = [], 0
    labels = sorted(means)
    for index, first in enumerate(labels):
        for second in labels[index + 1 :]:
            crossed = crossing_of(first, means[first], second, means[second])
            if crossed and not (means[first][3] or means[second][3]):
                gap = (biases[first] - biases[second]).dropna()
                found_gap = interval(gap)
                if not (found_gap.count >= 2 and (found_gap.low > 0 or found_gap.high < 0)):
                    unresolved += 1
                    continue
            found += crossed
    return sorted(found, key=lambda item: (item.budget, item.small, item.large)), unresolved


def crossing_of(first: str, a: tuple, second: str, b: tuple) -> list[Crossing]:
    """Where MSE_a(T) = bias_a + V_a t_a / T and MSE_b(T) change order with both defined (T ≥ both costs):
    bias_a − bias_b = (V_b t_b − V_a t_a) / T; or, when one's draws do not vary (MSE 0), at its cost."""
    if a[3] or b[3]:
        if a[3] and b[3]:
            return []
        exact, other = (first, second) if a[3] else (second, first)
        price = a[2] if a[3] else b[2]
        return [Crossing(other, exact, price)]
    start = max(a[2], b[2])
    bias_gap = a[0] - b[0]
    work_gap = b[1] * b[2] - a[1] * a[2]
    if bias_gap == 0 or work_gap == 0 or (bias_gap > 0) != (work_gap > 0):
        return []
    budget = work_gap / bias_gap
    if not budget > start:
        return []
    # Below the crossing the one with less work V·t is better, above it the one with less bias.
    small, large = (first, second) if a[1] * a[2] < b[1] * b[2] else (second, first)
    return [Crossing(small, large, budget)]
