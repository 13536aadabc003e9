"""Experiment tracking: the same scalars as ``metrics.csv`` and the summary, also in TensorBoard or MLflow.

``logger=tensorboard`` or ``logger=mlflow`` (``conf/logger/``; both need the optional extra
``pip install 'gradbench[tracking]'``). The results files stay the source of truth: a tracker receives what
the run writes, as it writes it, and a tracker that fails (a server gone) is dropped with one warning, never
failing the run.

- Every ``metrics.csv`` row ``step,metric,value`` becomes the scalar ``metric`` at ``step``, sent when the
  recorder writes ``metrics.csv`` (at every probe and at the end; ``bench.run.loop.Recorder``). TensorBoard
  stores them as double-precision tensors, so the values read back equal the file's.
- When the run ends, its summary: the numbers as final metrics ``final/<field>`` (at the last step), the
  resolved config (``.hydra/config.yaml``, flattened to ``task.dim`` and so on) and the summary's strings and
  flags (``status``, ``task``, ``estimator``, versions) as run parameters (TensorBoard's hyperparameters
  plugin; MLflow's params), the status as the run's end (MLflow: FINISHED, KILLED when interrupted, else
  FAILED).

TensorBoard writes its event files into ``logger.dir`` (default ``<run>/tensorboard``). MLflow logs to
``logger.tracking_uri`` (default ``$MLFLOW_TRACKING_URI``, else the file store ``./mlruns``; a file store is
allowed although MLflow 3 has it in maintenance mode), experiment ``logger.experiment``, one MLflow run per
run folder, named after it. ``python -m bench.export DIR --to tensorboard|mlflow`` sends runs already on
disk the same way (``export_run``).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import Any

from bench.formats.contract import INTERRUPTED, METRICS_FILE, OK, SUMMARY_FILE
from bench.formats.errors import ConfigError

LOGGERS = ("none", "tensorboard", "mlflow")
FINAL = "final/"
PARAMETER_LIMIT = 500  # characters of one parameter's value (MLflow refuses long ones)
EXTRA = "pip install 'gradbench[tracking]' (tensorboard and mlflow-skinny)"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"task.dim": 16, ...}``; lists as their text."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def parameters(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, str | float | bool]:
    """The run's parameters: its resolved config, flattened, and the summary's strings and flags."""
    found: dict[str, str | float | bool] = {}
    for key, value in flatten(config).items():
        found[key] = value if isinstance(value, bool | int | float) else str(value)[:PARAMETER_LIMIT]
    for key, value in summary.items():
        if isinstance(value, str | bool):
            found[f"summary.{key}"] = value if isinstance(value, bool) else value[:PARAMETER_LIMIT]
    return found


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's numbers as final metrics ``final/<field>`` (flags and nulls left out)."""
    return {
        f"{FINAL}{key}": float(value)
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class Tracker:
    """What a run sends to a tracking tool: rows of ``metrics.csv`` as they are written, then the summary."""

    def log_rows(self, rows: list[tuple[int, str, float]]) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, Any], config: dict[str, Any]) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    def __init__(self, directory: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"logger=tensorboard needs the tensorboard package: {EXTRA}.") from None
        self.directory = Path(directory)
        self.writer = SummaryWriter(log_dir=str(self.directory))

    def log_rows(self, rows: list[tuple[int, str, float]]) -> None:
        for step, name, value in rows:
            # new_style + double_precision: a float64 tensor, read back equal to metrics.csv's value
            self.writer.add_scalar(name, float(value), int(step), new_style=True, double_precision=True)
        self.writer.flush()

    def finish(self, summary: dict[str, Any], config: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(summary)
        step = int(summary.get("steps") or 0)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step, new_style=True, double_precision=True)
        finite = {name: value for name, value in metrics.items() if math.isfinite(value)}
        experiment, session_start, session_end = hparams(parameters(config, summary), finite)
        for event in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(event)
        self.writer.close()


class MLflowTracker(Tracker):
    def __init__(self, run_name: str, tracking_uri: str | None, experiment: str) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: maintenance mode; works
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError(f"logger=mlflow needs the mlflow package: {EXTRA}.") from None
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found is not None else self.client.create_experiment(experiment)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.uri = uri

    def log_rows(self, rows: list[tuple[int, str, float]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(name, float(value), 0, int(step)) for step, name, value in rows]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def finish(self, summary: dict[str, Any], config: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        step = int(summary.get("steps") or 0)
        metrics = [Metric(name, value, 0, step) for name, value in final_metrics(summary).items()]
        params = [Param(key, str(value)) for key, value in parameters(config, summary).items()]
        for start in range(0, max(len(metrics), len(params)), 100):  # MLflow's batch limit on params
            self.client.log_batch(
                self.run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
            )
        status = {OK: "FINISHED", INTERRUPTED: "KILLED"}.get(str(summary.get("status")), "FAILED")
        self.client.set_terminated(self.run_id, status)


def open_tracker(logger: Any, directory: Path) -> Tracker | None:
    """The tracker ``logger`` (the config's ``logger`` node) asks for, writing about the run in ``directory``;
    None for ``logger=none`` (or no node). ConfigError when the extra is not installed."""
    name = str(getattr(logger, "name", "none") if logger is not None else "none")
    if name == "none":
        return None
    if name == "tensorboard":
        folder = getattr(logger, "dir", None)
        return TensorBoardTracker(Path(folder) if folder else Path(directory) / "tensorboard")
    if name == "mlflow":
        experiment = str(getattr(logger, "experiment", None) or "gradbench")
        return MLflowTracker(Path(directory).name, getattr(logger, "tracking_uri", None), experiment)
    raise ConfigError(f"logger={name!r}: known loggers are {', '.join(LOGGERS)}.")


class Guarded:
    """A tracker whose failures are reported once and then ignored: tracking never fails a run."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker: Tracker | None = tracker

    def call(self, method: str, *arguments: Any) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, method)(*arguments)
        except Exception as error:  # noqa: BLE001 - a tracking tool's failure is not the run's
            print(
                f"[tracking] {type(self.tracker).__name__} failed ({type(error).__name__}: {error}); the run "
                f"goes on without it (its files are complete: python -m bench.export sends them later)",
                file=sys.stderr,
            )
            self.tracker = None

    def log_rows(self, rows: list[tuple[int, str, float]]) -> None:
        self.call("log_rows", rows)

    def finish(self, summary: dict[str, Any], config: dict[str, Any]) -> None:
        self.call("finish", summary, config)


def tracker_for(config: Any, directory: Path) -> Guarded | None:
    """The run's tracker (``config.logger``), guarded; None without one."""
    logger = config.get("logger") if hasattr(config, "get") else None
    tracker = open_tracker(logger, directory)
    return None if tracker is None else Guarded(tracker)


# ---- Runs already on disk (python -m bench.export) ---------------------------------------------------------


def read_rows(path: Path) -> list[tuple[int, str, float]]:
    """``metrics.csv``'s rows, as the recorder wrote them."""
    with path.open(newline="") as stream:
        return [(int(row["step"]), row["metric"], float(row["value"])) for row in csv.DictReader(stream)]


def read_config(run: Path) -> dict[str, Any]:
    """The run's resolved config (``.hydra/config.yaml``), or an empty one."""
    import yaml

    try:
        loaded = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def export_run(run: Path, tracker: Tracker) -> None:
    """Send one run folder (``metrics.csv``, ``summary.json``, ``.hydra/config.yaml``) to ``tracker``."""
    import json

    summary = json.loads((run / SUMMARY_FILE).read_text())
    if (run / METRICS_FILE).exists():
        tracker.log_rows(read_rows(run / METRICS_FILE))
    tracker.finish(summary, read_config(run))
