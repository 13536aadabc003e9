"""Writing a report: from run folders to tidy tables, and from tidy tables to report.md and figures.

``write_report`` reads the runs, writes ``summary.csv`` and ``curves.csv``, and renders the report from those
two files as read back; ``write_from_tables`` renders it from the two files alone. Both give the same
report.md for the same runs.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from bench.formats.contract import PROBE_FIELDS
from bench.formats.names import inside
from bench.formats.progress import duration
from bench.report.comparisons import write_comparisons
from bench.report.markdown import ReportOptions, report_text
from bench.report.palette import palette_for
from bench.report.read import (
    CURVES_TABLE,
    REPORT_DIR,
    SUMMARY_TABLE,
    Runs,
    load_runs,
    read_tables,
    write_tables,
)
from bench.report.same_point import STUDY_TABLES, collect_study_tables, mark_study_runs, study_section
from bench.report.tuning import TUNING_DIR, collect_tuning, stage_one_prefixes, tuning_section

CURVE_RUN_COLUMNS = ("run", "label", "task", "status", "seed", "step_time_ms")
COMPARISONS_TABLE = "comparisons.csv"
NUMERIC_FIELDS = (
    "final_loss",
    "step_time_ms",
    "optimizer_time_ms",
    "estimate_time_ms",
    "f_evals",
    "estimate_flops",
    "probe_draws",
    "best_known_objective",
)


def numeric(summaries: pd.DataFrame) -> pd.DataFrame:
    """Summaries with the probe fields and the cost fields as numbers (null: NaN)."""
    frame = summaries.copy()
    for column in (*PROBE_FIELDS, *NUMERIC_FIELDS):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def curves_of(summaries: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Long metrics joined with each run's label, task, status, seed, step time and ``stopped_at``: the
    step that diverged, else the last step the run finished."""
    runs = summaries.reindex(columns=list(CURVE_RUN_COLUMNS))
    steps = pd.to_numeric(summaries["steps"], errors="coerce") if "steps" in summaries else pd.Series(0.0)
    if "diverged_step" in summaries:
        steps = pd.to_numeric(summaries["diverged_step"], errors="coerce").fillna(steps)
    return metrics.merge(runs.assign(stopped_at=steps), on="run")


def render(runs: Runs, directory: Path, options: ReportOptions | None = None) -> None:
    """Write report.md, comparisons.csv and every figure into ``directory`` from the tidy tables ``runs``."""
    summaries = mark_study_runs(numeric(runs.summaries))  # a study's trajectories, labelled as such
    palette = palette_for(summaries["label"].astype(str).unique().tolist())
    curves = curves_of(summaries, runs.metrics)
    text, rankings = report_text(summaries, curves, palette, directory, options, runs.skipped_files)
    tuned = tuning_section(directory, summaries, curves)  # tuned optimizer studies (bench.report.tuning)
    study = study_section(directory)  # same-point studies
    inside(directory, "report.md").write_text(text + study + tuned)
    write_comparisons(rankings, inside(directory, COMPARISONS_TABLE))


def write_report(root: Path, out: Path | None = None, options: ReportOptions | None = None) -> Path:
    """Read every run below ``root`` and write the report into ``out`` (default ``root/report``); returns
    the report folder. ``options``: targets, the target fraction and budgets (``ReportOptions``).
    FileNotFoundError when no run summary is found.
    """
    root = Path(root)
    started = time.monotonic()
    # A tuned study's stage-1 runs are scored in its tuning.json, not reported as configurations.
    runs = load_runs(root, skip=tuple(stage_one_prefixes(root)))
    if runs.summaries.empty:
        raise FileNotFoundError(f"no run summaries (summary.json) found below {root}")
    directory = Path(out) if out is not None else root / REPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    print(f"[report] writing the tables into {directory}", file=sys.stderr, flush=True)
    write_tables(runs, directory)
    collect_study_tables(
        root, directory
    )  # study.csv and paired.csv of every study run (bench.report.same_point)
    collect_tuning(root, directory)  # every tuned study's tuning.json (bench.report.tuning)
    tables = read_tables(directory)
    tables.skipped_files = runs.skipped_files
    render(tables, directory, options)
    print(f"[report] done in {duration(time.monotonic() - started)}", file=sys.stderr, flush=True)
    return directory


def write_from_tables(tables: Path, out: Path | None = None, options: ReportOptions | None = None) -> Path:
    """Rebuild report.md and the figures from ``tables/summary.csv`` and ``tables/curves.csv`` alone, into
    ``out`` (default: ``tables`` itself; elsewhere, the two tables are copied beside the report)."""
    tables = Path(tables)
    runs = read_tables(tables)
    directory = Path(out) if out is not None else tables
    directory.mkdir(parents=True, exist_ok=True)
    for name in (SUMMARY_TABLE, CURVES_TABLE, *(name for name in STUDY_TABLES if (tables / name).exists())):
        target = inside(directory, name)
        if not target.exists() or not target.samefile(tables / name):
            shutil.copyfile(tables / name, target)
    if (tables / TUNING_DIR).is_dir() and not (directory / TUNING_DIR).exists():
        shutil.copytree(tables / TUNING_DIR, inside(directory, TUNING_DIR), symlinks=True)
    render(runs, directory, options)
    return directory
