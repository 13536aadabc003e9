"""report.md: per task, runs by status, the table of 95% intervals over seeds with the bias test's verdicts,
rankings paired over seeds, mean squared error at a compute budget, time to target (Kaplan–Meier), the
task's declared sections (``task.report``) and the figures; then the comparison across tasks and a note on
each metric.

Nothing here names a task or a task's metric: the generic content is the same for every task, and what a
task adds comes from its declaration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.formats.contract import OK, STATUSES
from bench.formats.progress import Progress
from bench.formats.tables import markdown_table
from bench.report.comparisons import (
    MINIMUM_TASKS,
    Ranking,
    critical_difference,
    rank,
    rank_text,
    shared_estimators,
)
from bench.report.conclusions import conclusions
from bench.report.declarations import Declaration, Panel, Section, task_declaration
from bench.report.figures import (
    figure_bias_variance,
    figure_by_training_time,
    figure_panels,
    figure_scale,
    figure_time_to_target,
    figure_work,
)
from bench.report.gradients import (
    COSTS,
    BiasVerdicts,
    ProbePoint,
    bias_verdicts,
    crossings,
    default_budget,
    deterministic_labels,
    error_parts,
    mse_at_budget,
    probe_point,
)
from bench.report.statistics import aggregate, column_table, on_log_scale, runs_text, seed_interval
from bench.report.survival import (
    DEFAULT_FRACTION,
    censoring_text,
    choose_target,
    events,
    kaplan_meier,
    report_times,
    seconds_text,
)


@dataclass
class ReportOptions:
    """What the command line sets: per-task targets (``--target``), the fraction of the gap to the best
    known value that sets a default target, and per-task budgets in ms (``--budget``)."""

    targets: dict[str, float] = field(default_factory=dict)
    target_fraction: float = DEFAULT_FRACTION
    budgets: dict[str, float] = field(default_factory=dict)


METRIC_NOTES = {
    "final_loss": "the task's headline objective at the end (exact where the task has one, else held-out "
    "loss); lower is better",
    "grad_variance": "trace of the covariance of one gradient estimate, 1/(M−1) Σ‖ĝ_m − ḡ‖²",
    "grad_variance_rel": "grad_variance / ‖g*‖², free of the scale of the gradient; lower is better",
    "grad_bias_rel": "unbiased estimate of ‖b‖² / ‖g*‖² (can be negative when the bias is below the probe's "
    "noise); 0 for an unbiased estimator",
    "bias test": "verdict of the test of zero bias (grad_bias_p) over the configuration's probes, "
    "Holm-adjusted over every probe of the table it appears in (named under the table): at most 5% chance "
    "that any unbiased configuration of that table is called biased",
    "grad_mse": "1/M Σ‖ĝ_m − g*‖² = variance + squared bias of one estimate; lower is better",
    "grad_cos": "cosine between the mean estimate and the reference gradient, debiased for the probe's "
    "noise; 1 is the right direction",
    "MSE at budget T": "‖b‖² + V·t/T: the error of the average of T/t estimates that cost t each (t = "
    "estimate_time_ms, or f_evals); undefined below T = t",
    "step_time_ms": "median wall time of one training step (probes excluded)",
    "estimate_time_ms": "median over the training steps of one estimate's forward and backward",
    "f_evals": "evaluations of f per gradient estimate and data point",
    "optimizer_time_ms": "median wall time of the optimizer's step alone (part of step_time_ms)",
    "time to target": "training time (step × median step time) until the curve first reaches the target, "
    "interpolated between probes; runs that never reach it are censored (Kaplan–Meier)",
}

INTERVALS = (
    "95% intervals over seeds (runs of one seed averaged first): mean ± t-interval; for scale quantities "
    "(variance, MSE, times, FLOPs, f_evals) geometric mean ×/÷ factor, the t-interval of the log"
)

GENERIC_PANELS = {
    "objective": Panel("objective", "objective"),
    "validation_objective": Panel("validation_objective", "validation objective"),
    "grad_variance": Panel("grad_variance", "gradient variance", log=True),
    "train_loss": Panel("train_loss", "training loss"),
}
"""Figures over training steps that every task gets (where its runs record the metric)."""

POINT_COLUMNS = ("grad_bias_rel", "grad_variance_rel", "grad_mse", "grad_cos")
"""Probe fields of the main table, at the probe point (``gradients.probe_point``)."""

SUMMARY_COLUMNS = ("estimate_time_ms", "f_evals", "step_time_ms")


def in_status_order(statuses: Iterable[str]) -> list[str]:
    """Statuses in the contract's order (``bench.formats.contract.STATUSES``), any other after them."""
    found = list(statuses)
    return [status for status in STATUSES if status in found] + sorted(set(found) - set(STATUSES))


def image(name: str) -> str:
    return f"![{name}]({name})"


def shared_names(runs: pd.DataFrame) -> list[str]:
    """A line naming what every run of a task shares among estimator, optimizer and S (S: runs that
    resolved it)."""
    parts = []
    for column, text in (
        ("estimator", "estimator `{}`"),
        ("optimizer", "optimizer `{}`"),
        ("samples", "S = {}"),
    ):
        values = runs[column].dropna().unique() if column in runs else []
        if len(values) == 1:
            parts.append(text.format(int(values[0]) if column == "samples" else values[0]))
    return [f"Every run of this task: {', '.join(parts)}.", ""] if parts else []


def number(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.3g}"


@dataclass
class TaskAnalysis:
    """What the report computes about one task before writing it."""

    runs: pd.DataFrame
    ok: pd.DataFrame
    curves: pd.DataFrame
    reference: str
    point: ProbePoint
    deterministic: set[str]
    verdicts: BiasVerdicts | None
    declaration: Declaration


def analyse(task: str, summaries: pd.DataFrame, curves: pd.DataFrame) -> TaskAnalysis:
    runs = summaries[summaries["task"] == task]
    ok = runs[runs["status"] == OK]
    reference = str(ok["reference"].iloc[0]) if not ok.empty else "none"
    point = probe_point(ok, curves)
    deterministic = deterministic_labels(point, reference)
    verdicts = bias_verdicts(ok, curves, deterministic) if reference != "none" else None
    declaration = task_declaration(runs["task_report"] if "task_report" in runs else [], task)
    return TaskAnalysis(runs, ok, curves, reference, point, deterministic, verdicts, declaration)


def main_table(analysis: TaskAnalysis) -> list[str]:
    """The per-configuration table: final objective, gradient statistics at the probe point, the bias
    test's verdict, costs, and runs ok/total."""
    table = aggregate(analysis.runs, ["final_loss", *SUMMARY_COLUMNS])
    if table.empty:
        return []
    table = table.assign(order=table["final_loss"].fillna(math.inf)).sort_values(["order", "label"])
    point = analysis.point
    shown = pd.DataFrame({"estimator": table["label"].to_numpy(), "seeds": table["seeds"].to_numpy()})
    shown["final_loss"] = [found.text() for found in table["final_loss_interval"]]
    metrics = [name for name in POINT_COLUMNS if name in point.values and point.values[name].notna().any()]
    if "grad_variance_rel" not in metrics and "grad_variance" in point.values:
        metrics.insert(0, "grad_variance")
    by_label = dict(tuple(point.values.groupby("label")))
    for metric in metrics:
        texts = []
        for label in table["label"]:
            group = by_label.get(label)
            found = (
                seed_interval(group[metric], group["seed"], on_log_scale(metric))
                if group is not None
                else None
            )
            texts.append(found.text() if found is not None else "—")
        shown[f"{metric} ({point.title})"] = texts
        if metric == "grad_bias_rel" and analysis.verdicts is not None:
            shown["bias test"] = [analysis.verdicts.text.get(label, "—") for label in table["label"]]
    for column in SUMMARY_COLUMNS:
        if column in table and table[column].notna().any():
            shown[column] = [found.text() for found in table[f"{column}_interval"]]
    shown["runs ok/total"] = table["runs"].to_numpy()
    lines = [
        f"{INTERVALS}. `final_loss` at the end; gradient statistics at {point.where}; reference gradient: "
        f"**{analysis.reference}**.",
        "",
        markdown_table(shown),
        "",
    ]
    if analysis.verdicts is not None:
        lines += [
            f"Bias test: **{analysis.verdicts.family}** (`grad_bias_p` at every probe of every finished run "
            'of the configurations above, and of no other table); "biased at 5%" when at least one of the '
            "configuration's probes rejects zero bias after adjustment, so the chance that any unbiased "
            "configuration here is called biased is at most 5%, as far as the p-values hold their size. "
            '"No detectable bias" is not a proof of none: the probe resolves a squared bias down to about '
            "its noise level V/M.",
            "",
        ]
    if analysis.reference == "none":
        lines += [
            "This task has no reference gradient: bias, MSE and cosine are not defined and are not shown.",
            "",
        ]
    return lines


def estimate_text(row: pd.Series, log: bool) -> str:
    mark = "a / b" if log else "a − b"
    return f"{mark} = {row['estimate']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def runs_by_label(runs: pd.DataFrame) -> dict[str, str]:
    """ "ok/total" runs of every configuration."""
    return {
        label: runs_text(int((group["status"] == OK).sum()), len(group))
        for label, group in runs.groupby("label")
    }


def ranking_lines(ranking: Ranking, meaning: str, notes: list[str], runs: dict[str, str]) -> list[str]:
    """A ranking as a table, best first (with each configuration's runs ok/total), then its adjacent
    pairs."""
    table = ranking.table
    shown = pd.DataFrame(
        {
            "rank": [f"{value:g}" for value in table["rank"]],
            "rank interval (95%, bootstrap over seeds)": [
                rank_text(row, ranking) for _, row in table.iterrows()
            ],
            "configuration": table["label"],
            "value": [found.text() for found in table["interval"]],
            "runs ok/total": [runs.get(label, "—") for label in table["label"]],
        }
    )
    lines = [
        f"Ranking by {meaning} (lower is better; paired over {len(ranking.seeds)} common seeds"
        + ("; compared on the log scale" if ranking.log else "")
        + "):",
        "",
        markdown_table(shown),
        "",
    ]
    lines += notes
    if ranking.left_out:
        lines += [f"Left out (too few seeds in common): {', '.join(ranking.left_out)}.", ""]
    pairs = ranking.pairs.set_index(["a", "b"])
    order = table["label"].tolist()
    adjacent = []
    for first, second in zip(order, order[1:], strict=False):
        row = pairs.loc[(first, second)]
        adjacent.append(
            {
                "a": first,
                "b": second,
                "paired estimate [95% CI], unadjusted": estimate_text(row, ranking.log),
                "p, unadjusted": number(row["p"]),
                f"p, Holm over {len(ranking.pairs)} pairs": number(row["p_holm"]),
            }
        )
    if adjacent:
        lines += [
            "Neighbours in this ranking (paired t-test over seeds"
            + (", on the log scale" if ranking.log else "")
            + "; the interval and the first p-value are each pair's own, unadjusted, and agree: the interval "
            "excludes no difference exactly when p < 0.05; the last column is that p-value adjusted by Holm "
            f"over all {len(ranking.pairs)} pairs of this ranking, which has no interval of its own; every "
            "pair in comparisons.csv):",
            "",
            markdown_table(pd.DataFrame(adjacent)),
            "",
        ]
    return lines


def values_of(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return pd.DataFrame({"label": frame["label"], "seed": frame["seed"], "value": frame[column]})


def rankings_section(
    task: str, analysis: TaskAnalysis, budget_ms: float | None = None
) -> tuple[list[str], list[Ranking]]:
    """Rankings on the final objective and, with a reference gradient, on gradient quality at the probe
    point and at a compute budget (``budget_ms``: the time budget; default: ``gradients.default_budget``)."""
    lines, found = [], []
    runs = runs_by_label(analysis.runs)
    final = rank(task, "final_loss", values_of(analysis.ok, "final_loss"), log=False)
    if final is not None:
        found.append(final)
        lines += ranking_lines(final, "final_loss", [], runs)
    if analysis.reference == "none":
        lines += [
            "No ranking on gradient quality: without a reference gradient a low variance can mean a "
            "collapsed model as well as a good estimator.",
            "",
        ]
        return lines, found
    point = analysis.point
    deterministic = sorted(analysis.deterministic)
    aside = (
        [
            f"Not ranked here: {', '.join(deterministic)} (draws do not vary: MSE 0 up to rounding; see the "
            "budget comparison below for its cost).",
            "",
        ]
        if deterministic
        else []
    )
    sampling = point.values[~point.values["label"].isin(analysis.deterministic)]
    if "grad_mse" in sampling:
        mse = rank(
            task, f"grad_mse at {point.title} (ratio a / b)", values_of(sampling, "grad_mse"), log=True
        )
        if mse is not None:
            found.append(mse)
            lines += ranking_lines(mse, f"grad_mse at {point.where}", aside, runs)
    parts = error_parts(point, analysis.deterministic)
    for cost, (name, unit, meaning) in COSTS.items():
        if parts[cost].isna().all():
            continue
        budget = budget_ms if cost == "estimate_time_ms" else None
        stated = budget is not None
        budget = budget if stated else default_budget(parts, cost)
        if not math.isfinite(budget):
            continue
        values = parts[["label", "seed"]].assign(value=mse_at_budget(parts, cost, budget))
        affordable = values[(values["value"] > 0) & values["value"].map(math.isfinite)]
        zero = sorted(set(values.loc[values["value"] == 0, "label"]))
        unaffordable = sorted(set(values.loc[values["value"] == math.inf, "label"]))
        how = "given on the command line" if stated else "the largest cost among the sampling configurations"
        notes = [
            f"Budget T = {budget:.3g} {unit} per gradient ({how}); cost t = {meaning}; MSE(T) = ‖b‖² + V·t/T"
            + (" relative to ‖g*‖²" if parts.attrs.get("relative") else "")
            + f", at {point.title}.",
            "",
        ]
        if zero:
            notes += [
                f"MSE 0 within this budget (draws do not vary, affordable): {', '.join(zero)}: best.",
                "",
            ]
        if unaffordable:
            notes += [f"Cannot afford one estimate within T: {', '.join(unaffordable)}.", ""]
        notes += timing_spread(point.values, cost)
        ranking = rank(task, f"MSE at budget T = {budget:.3g} {unit} (ratio a / b)", affordable, log=True)
        if ranking is not None:
            found.append(ranking)
            lines += ranking_lines(
                ranking, f"MSE at a budget of {name}, T = {budget:.3g} {unit}", notes, runs
            )
        else:
            lines += notes
        lines += crossing_lines(parts, cost, analysis.deterministic)
    return lines, found


TIMING_SPREAD = 1.5
"""A configuration's estimate time varying by more than this factor (×/÷, 95% over seeds) means the
timings are not to be trusted for ranking."""


def timing_spread(values: pd.DataFrame, cost: str) -> list[str]:
    """A warning when a measured cost varies between seeds by more than ×/÷ ``TIMING_SPREAD``."""
    if cost != "estimate_time_ms" or cost not in values:
        return []
    factors = {
        label: seed_interval(group[cost], group["seed"], log=True).factor
        for label, group in values.groupby("label")
    }
    spread = max((factor for factor in factors.values() if math.isfinite(factor)), default=1.0)
    if spread <= TIMING_SPREAD:
        return []
    return [
        f"**Timings vary between seeds by up to ×/÷ {spread:.3g}** (95% interval of estimate_time_ms): the "
        "machine was probably busy while these runs ran; the budget in evaluations of f below does not "
        "depend on it.",
        "",
    ]


def crossing_lines(parts: pd.DataFrame, cost: str, deterministic: set[str]) -> list[str]:
    """Where two configurations' MSE(T) curves cross, and from which budget on an exact one is best."""
    name, unit, _ = COSTS[cost]
    crossed, unresolved = crossings(parts, cost)
    exact = [item for item in crossed if item.large in deterministic]
    lines = []
    for label in sorted({item.large for item in exact}):
        budget = next(item.budget for item in exact if item.large == label)
        lines += [f"`{label}` (draws do not vary) has MSE 0 from T = {budget:.4g} {unit}, its cost, on.", ""]
    crossed = [item for item in crossed if item.large not in deterministic]
    if crossed:
        table = pd.DataFrame(
            {
                "better below T*": [item.small for item in crossed],
                "better above T*": [item.large for item in crossed],
                f"T* ({unit})": [f"{item.budget:.3g}" for item in crossed],
            }
        )
        lines += [
            f"Budgets T* at which two configurations' MSE(T) cross ({name}; from the means over seeds: ‖b‖² "
            "arithmetic, V geometric; below T* the one with less V·t is better, above it the one with less "
            "bias):",
            "",
            markdown_table(table),
            "",
        ]
    elif not exact:
        lines += [f"No two configurations' MSE(T) curves cross ({name}).", ""]
    if unresolved:
        lines += [
            f"{unresolved} more pair(s) would cross from their means, but their squared biases do not differ "
            "significantly (paired 95% t-interval over seeds contains 0): no crossing budget is claimed.",
            "",
        ]
    return lines


def time_to_target_lines(
    task: str, analysis: TaskAnalysis, options: ReportOptions, palette: dict, directory: Path
) -> tuple[list[str], str | None, float | None]:
    """The time-to-target table (Kaplan–Meier) and figure; returns the lines, the figure and the target."""
    curves = analysis.curves
    target = choose_target(
        analysis.runs,
        curves,
        options.targets.get(task),
        options.target_fraction,
        analysis.declaration.best_known,
    )
    if target.value is None:
        if curves[curves["metric"] == target.metric]["step"].nunique() < 2:
            return [], None, None
        return (
            [
                f"Time to target: {target.source} for `{target.metric}`; give --target {task}=VALUE for a "
                "time-to-target table.",
                "",
            ],
            None,
            None,
        )
    found = events(curves, target.metric, target.value)
    if found.empty:
        return [], None, target.value
    times = report_times(found)
    fits, rows = {}, []
    for label, group in found.groupby("label", sort=True):
        fit = kaplan_meier(group["time"].to_numpy(), group["reached"].to_numpy())
        fits[label] = fit
        runs = analysis.ok[analysis.ok["label"] == label]
        row = {
            "configuration": label,
            "runs": censoring_text(group),
            "median time to target, s [95% CI]": f"{seconds_text(fit.median)} "
            f"[{seconds_text(fit.median_low)}, {seconds_text(fit.median_high)}]",
        }
        for time in times:
            reached, low, high = fit.fraction_by(time)
            row[f"reached by {time:g} s"] = f"{reached:.0%} [{low:.0%}, {high:.0%}]"
        for column in ("step_time_ms", "optimizer_time_ms"):
            if column in runs and pd.to_numeric(runs[column], errors="coerce").notna().any():
                row[column] = seed_interval(runs[column], runs["seed"], log=True).text()
        row["runs ok/total"] = f"{len(runs)}/{int((analysis.runs['label'] == label).sum())}"
        row["order"] = fit.median
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["order", "configuration"], kind="stable").drop(columns="order")
    text = f"target: `{target.metric}` ≤ {target.value:.4g} ({target.source})"
    figure = figure_time_to_target(task, fits, found, text, palette, directory)
    lines = [
        f"Time to target: {text}. A run reaches it at the first probe at or below it, the time interpolated "
        "between that probe and the one before (training time = step × the run's median step time); a run "
        "that never reaches it is censored at its last probe. Kaplan–Meier median with its 95% interval "
        "(lifelines; ∞: the band does not fall below one half); fraction reached by each time with its 95% "
        "interval (Clopper–Pearson while no run is censored before that time; after that, Kaplan–Meier, or, "
        "while none has reached it, 0 up to the Clopper–Pearson bound from the runs still observed):",
        "",
        markdown_table(table),
        "",
    ]
    return lines + ([image(figure), ""] if figure else []), figure, target.value


def section_lines(
    task: str, section: Section, runs: pd.DataFrame, curves: pd.DataFrame, palette: dict, directory: Path
) -> list[str]:
    """A declared section: its text, its table (columns no run has are left out), its figure, its note."""
    lines = []
    if section.columns:
        values = column_table(section.columns, curves, runs)
        kept = [
            i
            for i in range(len(section.columns))
            if not values.empty and any(found.count for found in values[str(i)])
        ]
        if kept:
            if section.sort is not None:
                first = next(i for i, column in enumerate(section.columns) if column.metric == section.sort)
                order = [
                    found.center if math.isfinite(found.center) else math.inf for found in values[str(first)]
                ]
                values = values.assign(order=order).sort_values("order", kind="stable")
            shown = pd.DataFrame({"estimator": values.index, "seeds": values["seeds"].to_numpy()})
            for i in kept:
                shown[section.columns[i].title] = [found.text() for found in values[str(i)]]
            shown["runs ok/total"] = values["runs"].to_numpy()
            lines += ([section.text, ""] if section.text else []) + [markdown_table(shown), ""]
    name = None
    if section.panels:
        stem = f"{task}_{section.name}"
        name = figure_panels(task, stem, section.title, section.panels, curves, palette, directory)
        if name:
            lines += ([section.text, ""] if section.text and not lines else []) + [image(name), ""]
    if lines and section.note:
        lines += [section.note, ""]
    return lines


def code_versions_note(runs: pd.DataFrame) -> list[str]:
    """A warning when a task's runs come from more than one version of the code (``source_hash``, else
    ``git_commit``, of each summary): a difference between its configurations may then be the code's."""
    column = "source_hash" if "source_hash" in runs and runs["source_hash"].notna().any() else "git_commit"
    counts = runs[column].dropna().astype(str).value_counts() if column in runs else pd.Series(dtype=int)
    if len(counts) < 2:
        return []
    listed = ", ".join(f"`{version[:8]}` ({count} runs)" for version, count in sorted(counts.items()))
    return [
        f"**Mixed code versions.** These runs come from {len(counts)} versions of the code ({column}: "
        f"{listed}): a difference between configurations may be the code's. Re-running the older runs "
        f"(force=true) compares like with like.",
        "",
    ]


def task_section(
    task: str,
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    options: ReportOptions | None = None,
) -> tuple[list[str], list[Ranking]]:
    """The part of report.md about one task (writing its figures into ``directory``), and its rankings."""
    options = options or ReportOptions()
    analysis = analyse(task, summaries, curves)
    runs = analysis.runs
    lines = [f"## Task `{task}`", ""] + shared_names(runs) + code_versions_note(runs)
    counts = runs.groupby(["label", "status"]).size().unstack(fill_value=0)
    counts = counts[in_status_order(counts.columns)].reset_index()
    counts.columns.name = None
    counts["runs ok/total"] = counts["label"].map(runs_by_label(runs))
    lines += ["Runs by status:", "", markdown_table(counts), ""]
    not_ok = runs[runs["status"] != OK]
    if not not_ok.empty:
        shown = not_ok.reindex(columns=["run", "label", "seed", "status", "steps", "error"]).astype(object)
        shown = shown.where(shown.notna(), "")
        lines += ["Runs that did not finish:", "", markdown_table(shown), ""]
    lines += main_table(analysis)
    ranked, rankings = rankings_section(task, analysis, options.budgets.get(task))
    lines += ranked
    target_lines, _, target = time_to_target_lines(task, analysis, options, palette, directory)
    lines += target_lines
    for section in analysis.declaration.sections:
        lines += section_lines(task, section, runs, curves, palette, directory)
    lines += figure_lines(task, analysis, palette, directory, target, options)
    lines[2:2] = conclusions(analysis, rankings)  # first under the task's heading: what the numbers support
    return lines, rankings


def figure_lines(
    task: str,
    analysis: TaskAnalysis,
    palette: dict,
    directory: Path,
    target: float | None,
    options: ReportOptions,
) -> list[str]:
    curves = analysis.curves

    def over_steps(metric: str) -> str | None:
        panel = GENERIC_PANELS[metric]
        return figure_panels(task, f"{task}_{metric}", "", (panel,), curves, palette, directory)

    point = analysis.point
    values = point.values
    scale = (
        "grad_variance_rel"
        if "grad_variance_rel" in values and values["grad_variance_rel"].notna().any()
        else "grad_variance"
    )
    figures = [
        over_steps("objective"),
        over_steps("validation_objective"),
        figure_by_training_time(
            task,
            "validation_objective" if (curves["metric"] == "validation_objective").any() else "objective",
            curves,
            palette,
            directory,
            target,
        ),
        figure_scale(task, values, scale, point.title, palette, directory) if scale in values else None,
    ]
    if analysis.reference != "none" and not values.empty:
        parts = error_parts(point, analysis.deterministic)
        draws = (
            pd.to_numeric(values["probe_draws"], errors="coerce").median()
            if "probe_draws" in values
            else math.nan
        )
        verdicts = analysis.verdicts.at_point(point.same_parameters) if analysis.verdicts is not None else {}
        family = analysis.verdicts.family if analysis.verdicts is not None else ""
        figures.append(
            figure_bias_variance(task, parts, float(draws), point.title, verdicts, palette, directory, family)
        )
        for cost in COSTS:
            if parts[cost].notna().any():
                budget = options.budgets.get(task) if cost == "estimate_time_ms" else None
                budget = budget if budget is not None else default_budget(parts, cost)
                if math.isfinite(budget):
                    figures.append(
                        figure_work(task, parts, cost, budget, crossings(parts, cost)[0], palette, directory)
                    )
    figures += [over_steps("grad_variance"), over_steps("train_loss")]
    return [image(name) for name in figures if name] + [""]


def across_tasks(summaries: pd.DataFrame, directory: Path) -> list[str]:
    """The critical-difference diagram where at least ``MINIMUM_TASKS`` tasks share the estimators."""
    shared = shared_estimators(summaries)
    if len(shared.tasks) < MINIMUM_TASKS:
        count = len(shared.tasks)
        what = (
            f"the most tasks that share two or more estimators here is {count}"
            if count
            else "no two tasks share two or more estimators here"
        )
        return [
            "## Across tasks",
            "",
            f"No critical-difference diagram: it needs at least {MINIMUM_TASKS} tasks that share the same "
            f"estimators (one configuration each); {what}.",
            "",
        ]
    name = critical_difference(shared, directory)
    return [
        "## Across tasks",
        "",
        f"Final objective of {len(shared.estimators)} estimators on {len(shared.tasks)} tasks "
        f"({', '.join(shared.tasks)}): mean rank over tasks (each task's mean over seeds) and Nemenyi's "
        "critical difference at 5% (autorank); estimators joined by a bar do not differ significantly.",
        "",
        image(name),
        "",
    ]


def report_text(
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    options: ReportOptions | None = None,
    skipped_files: list[str] | None = None,
) -> tuple[str, list[Ranking]]:
    """The whole report.md (writing every figure into ``directory``) and every ranking."""
    root = summaries["root"].iloc[0] if "root" in summaries else ""
    counts = summaries["status"].value_counts()
    lines = [
        f"# Report: {root}",
        "",
        f"{len(summaries)} runs; "
        + ", ".join(f"{counts[status]} {status}" for status in in_status_order(counts.index)),
        "",
    ]
    if skipped_files:
        lines += ["Skipped unreadable files: " + ", ".join(f"`{path}`" for path in skipped_files), ""]
    rankings = []
    tasks = sorted(summaries["task"].unique())
    progress = Progress("[report]", "tables and figures of each task", len(tasks), every_s=0)
    for task in tasks:
        task_lines, task_rankings = task_section(
            task, summaries, curves[curves["task"] == task], palette, directory, options
        )
        progress.advance(str(task))
        lines += task_lines
        rankings += task_rankings
    lines += across_tasks(summaries, directory)
    lines += ["## Metrics", ""] + [f"- `{name}`: {note}" for name, note in METRIC_NOTES.items()] + [""]
    return "\n".join(lines), rankings
