"""Experiment tracking (``logger=tensorboard|mlflow``, ``python -m bench.export``): what a tracking tool
holds, read back with its own reader, equals ``metrics.csv`` row by row and the summary's numbers. The tests
skip, saying why, where the optional extra ``gradbench[tracking]`` is missing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.run.runner import run
from bench.run.tracking import FINAL, read_rows

FAST = ("task=toy", "task.dim=2", "estimator=rloo", "steps=20", "probe.every=5", "probe.draws=8")


def departures(expected: list[tuple[int, str, float]], found: dict[tuple[int, str], list[float]]) -> list:
    """Rows whose value the tool does not hold at their step (NaN equals NaN); [] when every row is there."""
    missing = []
    for step, name, value in expected:
        values = found.get((step, name), [])
        if not any(v == value or (math.isnan(v) and math.isnan(value)) for v in values):
            missing.append((step, name, value, values))
    return missing


def final_rows(summary: dict) -> list[tuple[int, str, float]]:
    return [
        (summary["steps"], f"{FINAL}{key}", float(value))
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


def tensorboard_scalars(folder: Path) -> tuple[dict[tuple[int, str], list[float]], dict]:
    """Every scalar of the event files in ``folder`` (TensorBoard's own reader), and the hyperparameters."""
    pytest.importorskip("tensorboard", reason="the optional extra gradbench[tracking] is not installed")
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    found: dict[tuple[int, str], list[float]] = {}
    for tag in accumulator.Tags()["tensors"]:
        for event in accumulator.Tensors(tag):
            if tag.startswith("_hparams_"):
                continue
            found.setdefault((event.step, tag), []).append(
                float(tensor_util.make_ndarray(event.tensor_proto))
            )
    hyper = {}
    for content in accumulator.PluginTagToContent("hparams").values():
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        hyper.update({key: value.string_value or value.number_value for key, value in start.hparams.items()})
    return found, hyper


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory) -> Path:
    pytest.importorskip("tensorboard", reason="the optional extra gradbench[tracking] is not installed")
    from omegaconf import OmegaConf

    from tests.helpers import make_config

    folder = tmp_path_factory.mktemp("tracked") / "run"
    config = make_config(*FAST, "logger=tensorboard", "threads=1")
    run(config, folder)
    (folder / ".hydra").mkdir()  # as python -m bench leaves it: the resolved config, which export reads
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    return folder


def test_tensorboard_holds_every_row_of_metrics_csv_and_the_summary(tensorboard_run):
    found, hyper = tensorboard_scalars(tensorboard_run / "tensorboard")
    rows = read_rows(tensorboard_run / "metrics.csv")
    summary = json.loads((tensorboard_run / "summary.json").read_text())
    assert len(rows) > 40 and summary["status"] == "ok"
    assert departures(rows, found) == []
    assert departures(final_rows(summary), found) == []
    assert hyper["task.name"] == "toy" and hyper["summary.estimator"] == "rloo" and hyper["steps"] == 20
    # Negative control: a value off in its last digit, or at another step, is caught.
    step, name, value = rows[3]
    assert departures([(step, name, math.nextafter(value, math.inf))], found)
    assert departures([(step + 1, name, value)], found)


def test_export_to_tensorboard_equals_the_live_log(tensorboard_run, tmp_path):
    from bench.cli.export import main as export

    assert export([str(tensorboard_run.parent), "--to", "tensorboard", "--out", str(tmp_path)]) == 0
    live, _ = tensorboard_scalars(tensorboard_run / "tensorboard")
    exported, _ = tensorboard_scalars(tmp_path / "run")
    assert exported == live


def test_mlflow_holds_every_row_and_the_summary_as_params_and_final_metrics(
    tensorboard_run, tmp_path, monkeypatch
):
    pytest.importorskip("mlflow", reason="the optional extra gradbench[tracking] is not installed")
    from mlflow import MlflowClient

    from bench.cli.export import main as export
    from tests.helpers import make_config

    uri = (tmp_path / "mlruns").as_uri()  # a local file store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    live = tmp_path / "live"
    run(make_config(*FAST, "logger=mlflow", f"logger.tracking_uri={uri}", "threads=1"), live)
    assert export([str(tensorboard_run.parent), "--to", "mlflow", "--tracking-uri", uri]) == 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("gradbench")
    found_runs = {item.info.run_name: item for item in client.search_runs([experiment.experiment_id])}
    assert set(found_runs) == {"live", "run"}
    for name, folder in (("live", live), ("run", tensorboard_run)):
        record = found_runs[name]
        rows = read_rows(folder / "metrics.csv")
        summary = json.loads((folder / "summary.json").read_text())
        found: dict[tuple[int, str], list[float]] = {}
        for metric in {row[1] for row in rows} | {row[1] for row in final_rows(summary)}:
            for point in client.get_metric_history(record.info.run_id, metric):
                found.setdefault((point.step, metric), []).append(point.value)
        assert departures(rows, found) == [] and departures(final_rows(summary), found) == []
        assert record.data.params["task.name"] == "toy" and record.data.params["summary.status"] == "ok"
        assert record.info.status == "FINISHED"


def test_a_logger_without_its_package_is_a_config_error(monkeypatch, tmp_path):
    import builtins

    from bench.formats.errors import ConfigError
    from bench.run.tracking import TensorBoardTracker

    real_import = builtins.__import__

    def missing(name, *arguments, **keywords):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *arguments, **keywords)

    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(ConfigError, match=r"gradbench\[tracking\]"):
        TensorBoardTracker(tmp_path)
