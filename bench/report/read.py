"""Reading runs: every run folder below a directory into two tidy tables, and those tables to and from CSV.

A run folder (``bench.formats.contract``) holds ``summary.json``, ``metrics.csv`` and ``.hydra/config.yaml``,
the resolved config. The report reads nothing else. ``summary.csv`` (one row per run: every summary field,
plus ``run``, ``label``, ``task_report`` and ``root``) and ``curves.csv`` (``run, step, metric, value``) hold
all the report needs, so that it can be rebuilt from them without the run folders.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.formats.contract import FIELDS, METRICS_FILE, METRICS_HEADER, REPORT_DIR, SUMMARY_FILE
from bench.formats.names import inside
from bench.formats.progress import Progress
from bench.report.declarations import bundled_declarations, encode
from bench.report.labels import labels, settings

SUMMARY_TABLE = "summary.csv"
CURVES_TABLE = "curves.csv"
CURVE_COLUMNS = ("run", *METRICS_HEADER)
REQUIRED = ("task", "estimator", "status")
FIELD_LIMIT = 131072
"""The longest field of metrics.csv read (the csv module's own limit, as ``python -m bench.check`` reads)."""
TEXT_COLUMNS = ("run", "label", "task_report", "root")
"""Columns of summary.csv added to the summary fields: the run's folder below the root, its label, its task's
report declaration (JSON text, ``bench.report.declarations``) and the folder the runs were read from."""


@dataclass
class Runs:
    """Runs as tidy tables: one row per run (``summaries``) and every metric in long form (``metrics``)."""

    summaries: pd.DataFrame
    metrics: pd.DataFrame
    skipped_files: list[str]


def read_config(run: Path) -> dict[str, Any] | None:
    """The run's resolved config (``.hydra/config.yaml``) as plain data; None when it has none."""
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        node = yaml.safe_load(path.read_text())
    except Exception as error:  # noqa: BLE001 - any unreadable file (not UTF-8, nested too deep) is named
        warnings.warn(f"cannot read {path} ({error}); the run is labelled from its summary", stacklevel=2)
        return None
    return node if isinstance(node, dict) else None


def read_summary(path: Path) -> dict[str, Any]:
    """A run's summary; ValueError saying why it cannot be read (not UTF-8, not JSON, nested too deep to
    parse, not an object with at least ``REQUIRED``)."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except RecursionError:
        raise ValueError("nested too deep to parse (not a run summary)") from None
    if not isinstance(summary, dict) or not set(REQUIRED) <= summary.keys():
        raise ValueError(f"not a run summary (needs at least {', '.join(REQUIRED)})")
    for key in REQUIRED:
        if not isinstance(summary[key], str):
            raise ValueError(f"'{key}' is a {type(summary[key]).__name__}, not a string")
    return summary


def load_runs(root: Path, skip: tuple[str, ...] = ()) -> Runs:
    """Read every ``summary.json`` below ``root`` with the ``metrics.csv`` and resolved config beside it.

    Folders named ``report`` are not searched (the report's own output). A malformed summary or metrics
    file is skipped with a warning; the rest is still read. A run without ``.hydra/config.yaml`` is labelled
    from its summary. A run whose config has no ``task.report`` key (made without Hydra, or before its task
    declared one) takes the declaration of the bundled task config of the same name, if any;
    ``task.report=null`` declares none. Runs whose folder (relative to ``root``, with a trailing ``/``) starts
    with one of ``skip`` are not read (a tuned study's stage-1 runs, ``bench.report.tuning``).
    """
    root = Path(root)
    summaries, metrics, configs, skipped = [], [], {}, []
    bundled = None
    paths = [
        path
        for path in sorted(root.rglob(SUMMARY_FILE))
        if REPORT_DIR not in path.relative_to(root).parts[:-1]
        and not (skip and (path.parent.relative_to(root).as_posix() + "/").startswith(skip))
    ]
    progress = Progress("[report]", f"reading the runs below {root}", len(paths))
    for path in paths:
        progress.advance()
        run = path.parent
        try:
            summary = read_summary(path)
        except Exception as error:  # noqa: BLE001 - one unreadable file is named, the others read
            warnings.warn(f"skipping {path}: {error}", stacklevel=2)
            skipped.append(str(path))
            continue
        run_id = str(run.relative_to(root)) if run != root else run.name
        config = read_config(run)
        task_node = config.get("task") if config is not None else None
        if isinstance(task_node, dict) and "report" in task_node:
            declaration = task_node["report"]
        else:
            bundled = bundled_declarations() if bundled is None else bundled
            declaration = bundled.get(summary["task"])
        summary.update(run=run_id, task_report=encode(declaration), root=str(root))
        configs[len(summaries)] = settings(config)
        summaries.append(summary)
        csv = run / METRICS_FILE
        if csv.exists():
            try:
                frame = pd.read_csv(csv)
                longest = frame["metric"].astype(str).str.len().max() if len(frame) else 0
                if longest > FIELD_LIMIT:
                    raise ValueError(f"a metric name of {longest} characters (at most {FIELD_LIMIT})")
                frame.insert(0, "run", run_id)
                metrics.append(frame[list(CURVE_COLUMNS)])
            except Exception as error:  # noqa: BLE001 - one unreadable file is named, the others read
                warnings.warn(f"skipping {csv}: {type(error).__name__}: {error}", stacklevel=2)
                skipped.append(str(csv))
    summary_frame = pd.DataFrame(summaries)
    if not summary_frame.empty:
        summary_frame["label"] = labels(summary_frame, configs)
    metric_frame = (
        pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(columns=list(CURVE_COLUMNS))
    )
    return Runs(summary_frame, metric_frame, skipped)


def write_tables(runs: Runs, directory: Path) -> None:
    """Write ``summary.csv`` and ``curves.csv`` into ``directory``."""
    runs.summaries.to_csv(inside(directory, SUMMARY_TABLE), index=False)
    runs.metrics.to_csv(inside(directory, CURVES_TABLE), index=False)


def text_columns(columns: list[str]) -> dict[str, type]:
    """Columns read as text whatever they hold: the contract's text fields and the report's own."""
    text = {name for name, field in FIELDS.items() if field.types == (str,)} | set(TEXT_COLUMNS)
    return {column: str for column in columns if column in text}


def read_table(path: Path) -> pd.DataFrame:
    """A table written by ``write_tables``, with the types it was written with (text stays text)."""
    columns = pd.read_csv(path, nrows=0).columns.tolist()
    return pd.read_csv(
        path,
        dtype=text_columns(columns),
        keep_default_na=False,  # an estimator named "none" or "NA" is a name, not a missing value
        na_values=[""],
        float_precision="round_trip",
    )


def read_tables(directory: Path) -> Runs:
    """``summary.csv`` and ``curves.csv`` of a report folder, as ``load_runs`` returned them."""
    directory = Path(directory)
    for name in (SUMMARY_TABLE, CURVES_TABLE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"no {name} in {directory}")
    summaries = read_table(directory / SUMMARY_TABLE)
    if summaries.empty or not set(REQUIRED) | {"run", "label"} <= set(summaries.columns):
        raise FileNotFoundError(f"{directory / SUMMARY_TABLE} holds no runs")
    metrics = read_table(directory / CURVES_TABLE)
    metrics["metric"] = metrics["metric"].astype(str)
    return Runs(summaries, metrics, [])
