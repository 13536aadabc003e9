"""The study tables of a report: ``study.csv`` and ``paired.csv`` of every study run, gathered into the report
folder and read back; the study's trajectory runs labelled in the own-trajectory tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from bench.formats.contract import PAIRED_FILE, PAIRED_HEADER, STUDY_FILE, SUMMARY_FILE
from bench.formats.names import inside

STUDY_TABLE, PAIRED_TABLE = STUDY_FILE, PAIRED_FILE
STUDY_TABLES = (STUDY_TABLE, PAIRED_TABLE)
RUN_COLUMNS = ("run", "task")
DEFAULT_BASELINE = "rloo"
STUDY_LABEL = " (study trajectory)"


def collect_study_tables(root: Path, directory: Path) -> None:
    """Concatenate the ``study.csv`` and ``paired.csv`` of every study run below ``root`` into ``directory``,
    each row with its run's folder (relative to ``root``), task and ``study.baseline`` (from its resolved
    config); nothing when there is no study."""
    root, found = Path(root), {STUDY_TABLE: [], PAIRED_TABLE: []}
    for summary_path in sorted(root.rglob(SUMMARY_FILE)):
        run = summary_path.parent
        if "report" in run.relative_to(root).parts:
            continue
        try:
            summary = json.loads(summary_path.read_text())
        except Exception:  # noqa: BLE001 - not UTF-8, nested too deep...: bench.report.read names the file
            continue
        if not isinstance(summary, dict) or summary.get("kind") != "study":
            continue
        baseline = configured_baseline(run)
        for name in STUDY_TABLES:
            if (run / name).is_file():
                frame = pd.read_csv(run / name, keep_default_na=False, na_values=[""])
                frame.insert(0, "study_baseline", baseline)
                frame.insert(0, "task", summary.get("task"))
                frame.insert(0, "run", str(run.relative_to(root)) if run != root else run.name)
                found[name].append(frame)
    for name, frames in found.items():
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(inside(directory, name), index=False)
        else:
            inside(directory, name).unlink(missing_ok=True)


def configured_baseline(run: Path) -> str:
    """The run's ``study.baseline`` (``.hydra/config.yaml``), else ``DEFAULT_BASELINE``."""
    try:
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    except Exception:  # noqa: BLE001 - any unreadable config: the default baseline
        return DEFAULT_BASELINE
    study = config.get("study") if isinstance(config, dict) else None
    baseline = study.get("baseline") if isinstance(study, dict) else None
    return str(baseline) if baseline else DEFAULT_BASELINE


def mark_study_runs(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summaries with `` (study trajectory)`` added to the label of every study run (``kind: study``)."""
    if "kind" not in summaries or "label" not in summaries:
        return summaries
    study = summaries["kind"] == "study"
    if not study.any():
        return summaries
    marked = summaries.copy()
    marked.loc[study, "label"] = marked.loc[study, "label"].astype(str) + STUDY_LABEL
    return marked


def read_study_tables(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    directory = Path(directory)
    if not (directory / STUDY_TABLE).is_file():
        return None
    text = {"run": str, "task": str, "trajectory": str, "estimator": str, "baseline": str, "metric": str}
    text["study_baseline"] = str
    text.update(params_digest=str, variant=str)
    options = {"keep_default_na": False, "na_values": [""], "dtype": text}
    study = pd.read_csv(directory / STUDY_TABLE, **options)
    paired_path = directory / PAIRED_TABLE
    paired = (
        pd.read_csv(paired_path, **options)
        if paired_path.is_file()
        else pd.DataFrame(columns=[*RUN_COLUMNS, *PAIRED_HEADER])
    )
    for frame in (study, paired):  # "nan" is a number that does not exist, not a name
        for column in ("value", "samples", "baseline_samples", "seed", "checkpoint", "step"):
            if column in frame:
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return study, paired
