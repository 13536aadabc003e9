"""report.md: per task, runs by status, tables of mean ± 95% CI over seeds, rankings, time to target, the
task's declared sections (``task.report``) and links to the figures, then a note on each metric.

Nothing here names a task or a task's metric: the generic content is the same for every task, and what a
task adds comes from its declaration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.contract import PROBE_FIELDS, STATUSES
from bench.report.declarations import Panel, Section, task_sections
from bench.report.figures import figure_bias_variance, figure_by_training_time, figure_panels, figure_variance
from bench.report.statistics import aggregate, column_table, format_ci, time_to_target

METRIC_NOTES = {
    "final_loss": "the task's headline objective at the end (exact where the task has one, else held-out "
    "loss); lower is better",
    "grad_variance": "trace of the covariance of one gradient estimate, 1/(M−1) Σ‖ĝ_m − ḡ‖²; lower is better",
    "grad_bias": "‖ḡ − g*‖, distance of the mean estimate from the reference gradient",
    "bias_in_se": "grad_bias / grad_bias_se: about 1 for an unbiased estimator, ≫ 1 means measurable bias",
    "grad_mse": "1/M Σ‖ĝ_m − g*‖² = variance + squared bias; lower is better",
    "grad_cos": "cosine between the mean estimate and the reference gradient; 1 is the right direction",
    "grad_snr": "‖ḡ‖² / grad_variance, signal-to-noise ratio of one estimate; higher is better",
    "step_time_ms": "median wall time of one training step (probes excluded)",
    "estimate_time_ms": "wall time of one gradient estimate in a probe",
    "work_variance": "grad_variance × estimate_time_ms: variance at equal compute (lower is better)",
    "optimizer_time_ms": "median wall time of the optimizer's step alone (part of step_time_ms)",
    "time to target": "training time (step × median step time) until the objective first reaches the target",
}

NOT_IN_THE_TABLE = ("grad_bias_se", "grad_bias_sq", "grad_snr")
"""Probe fields the table leaves to summary.csv: the SE and the square are carried by ``bias_in_se`` and
``grad_bias``, and the SNR by the variance and the bias."""


def table_columns() -> list[str]:
    """The per-task table: the objective, the contract's probe statistics (``bias_in_se`` beside the bias),
    the step and estimate times, and the work-normalized variance."""
    probe = []
    for name in PROBE_FIELDS:
        if name not in NOT_IN_THE_TABLE:
            probe += [name, "bias_in_se"] if name == "grad_bias" else [name]
    return ["final_loss", *probe, "step_time_ms", "estimate_time_ms", "work_variance"]


TABLE_COLUMNS = table_columns()

RANKINGS = {
    "grad_mse": "mean squared error to the reference gradient (variance + squared bias)",
    "work_variance": (
        "work-normalized variance, grad_variance × estimate_time_ms (what a unit of compute buys)"
    ),
}

GENERIC_PANELS = {
    "objective": Panel("objective", "objective"),
    "grad_variance": Panel("grad_variance", "gradient variance", log=True),
    "train_loss": Panel("train_loss", "training loss"),
}
"""Figures over training steps that every task gets (where its runs record the metric)."""


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def in_status_order(statuses: Iterable[str]) -> list[str]:
    """Statuses in the contract's order (``bench.contract.STATUSES``), any other after them."""
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


def rankings(table: pd.DataFrame, reference: str) -> list[str]:
    """Per-task rankings, best first, each value with its 95% CI and the seed count."""
    lines = []
    for column, meaning in RANKINGS.items():
        if table.empty or column not in table or not table[column].notna().any():
            continue
        if reference == "none":
            # Without a reference, a low variance may mean a collapsed model as well as a good estimator.
            lines += [
                "No ranking: without a reference gradient neither MSE nor variance alone ranks estimators.",
                "",
            ]
            break
        ranked = table[table[column].notna()].sort_values(column).reset_index(drop=True)
        shown = pd.DataFrame(
            {
                "rank": range(1, len(ranked) + 1),
                "estimator": ranked["label"],
                column: [
                    format_ci(m, h) for m, h in zip(ranked[column], ranked[f"{column}_ci95"], strict=True)
                ],
                "seeds": ranked["seeds"],
            }
        )
        lines += [f"Ranking by {meaning}, lower is better:", "", markdown_table(shown), ""]
    return lines


def time_to_target_lines(ok: pd.DataFrame, curves: pd.DataFrame, target: float | None) -> list[str]:
    """The time-to-target table (``statistics.time_to_target``), fastest first."""
    found = time_to_target(ok, curves, target)
    if found is None:
        return []
    target, given, rows = found
    rows = rows.assign(
        order=[seconds[0] if math.isfinite(seconds[0]) else math.inf for seconds in rows["seconds"]]
    )
    rows = rows.sort_values("order", kind="stable")
    table = pd.DataFrame(
        {
            "configuration": rows["label"],
            "reached": [
                f"{reached}/{total}" for reached, total in zip(rows["reached"], rows["runs"], strict=True)
            ],
            "steps to target": [format_ci(*value) for value in rows["steps"]],
            "training time to target (s)": [format_ci(*value) for value in rows["seconds"]],
            "step_time_ms": [format_ci(*value) for value in rows["step_time_ms"]],
            "optimizer_time_ms": [format_ci(*value) for value in rows["optimizer_time_ms"]],
        }
    )
    how = "given on the command line" if given else "the best level every configuration's mean curve reaches"
    return [
        f"Time to target: objective ≤ **{target:.4g}** ({how}); first probe step at which a run's objective "
        "is at or below it, and that step × the run's median step time (mean ± 95% CI over the seeds that "
        "reach it):",
        "",
        markdown_table(table),
        "",
    ]


def main_table(ok: pd.DataFrame, reference: str) -> tuple[pd.DataFrame, list[str]]:
    table = aggregate(ok, TABLE_COLUMNS)
    if table.empty:
        return table, []
    table = table.sort_values(["final_loss", "label"])
    shown = pd.DataFrame({"estimator": table["label"], "seeds": table["seeds"]})
    for column in TABLE_COLUMNS:
        if column in table and table[column].notna().any():
            shown[column] = [
                format_ci(m, h) for m, h in zip(table[column], table[f"{column}_ci95"], strict=True)
            ]
    lines = [
        f"Mean ± 95% CI over seeds (runs with status ok; reference gradient: **{reference}**):",
        "",
        markdown_table(shown),
        "",
    ]
    if reference == "none":
        lines += [
            "This task has no reference gradient: bias, MSE and cosine are not defined and are not shown.",
            "",
        ]
    return table, lines


def section_lines(
    task: str, section: Section, runs: pd.DataFrame, curves: pd.DataFrame, palette: dict, directory: Path
) -> list[str]:
    """A declared section: its text, its table (columns no run has are left out), its figure, its note."""
    lines = []
    if section.columns:
        values = column_table(section.columns, curves, runs)
        kept = [i for i in range(len(section.columns)) if not values.empty and values[str(i)].notna().any()]
        if kept:
            if section.sort is not None:
                first = next(i for i, column in enumerate(section.columns) if column.metric == section.sort)
                values = values.assign(order=values[str(first)].fillna(math.inf))
                values = values.sort_values("order", kind="stable")
            shown = pd.DataFrame({"estimator": values.index, "seeds": values["seeds"].to_numpy()})
            for i in kept:
                means, halves = values[str(i)], values[f"{i}_ci95"]
                shown[section.columns[i].title] = [
                    format_ci(m, h) for m, h in zip(means, halves, strict=True)
                ]
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


def task_section(
    task: str,
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    target: float | None = None,
) -> list[str]:
    """The part of report.md about one task, writing its figures into ``directory``."""
    runs = summaries[summaries["task"] == task]
    ok = runs[runs["status"] == "ok"]
    reference = ok["reference"].iloc[0] if not ok.empty else "none"
    lines = [f"## Task `{task}`", ""] + shared_names(runs)
    counts = runs.groupby(["label", "status"]).size().unstack(fill_value=0)
    counts = counts[in_status_order(counts.columns)].reset_index()
    counts.columns.name = None
    lines += ["Runs by status:", "", markdown_table(counts), ""]
    not_ok = runs[runs["status"] != "ok"]
    if not not_ok.empty:
        shown = not_ok[["run", "label", "seed", "status", "steps", "error"]].astype(object)
        shown = shown.where(shown.notna(), "")
        lines += ["Runs that did not finish:", "", markdown_table(shown), ""]
    table, main = main_table(ok, reference)
    lines += main
    lines += rankings(table, reference)
    lines += time_to_target_lines(ok, curves, target)
    for section in task_sections(runs["task_report"] if "task_report" in runs else [], task):
        lines += section_lines(task, section, runs, curves, palette, directory)

    def over_steps(metric: str) -> str | None:
        panel = GENERIC_PANELS[metric]
        return figure_panels(task, f"{task}_{metric}", "", (panel,), curves, palette, directory)

    figures = [
        over_steps("objective"),
        figure_by_training_time(task, "objective", "objective", curves, palette, directory),
        figure_variance(task, ok, palette, directory),
        figure_bias_variance(task, ok, palette, directory) if reference != "none" else None,
        over_steps("grad_variance"),
        over_steps("train_loss"),
    ]
    lines += [image(name) for name in figures if name] + [""]
    return lines


def report_text(
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    targets: dict[str, float] | None = None,
    skipped_files: list[str] | None = None,
) -> str:
    """The whole report.md (writing every figure into ``directory``)."""
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
    for task in sorted(summaries["task"].unique()):
        target = (targets or {}).get(task)
        lines += task_section(task, summaries, curves[curves["task"] == task], palette, directory, target)
    lines += ["## Metrics", ""] + [f"- `{name}`: {note}" for name, note in METRIC_NOTES.items()] + [""]
    return "\n".join(lines)
