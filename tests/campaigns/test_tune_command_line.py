"""``python -m bench.tune`` from the command line alone: any task, ``--optimizers`` and ``--grid``, the same
two stages as a tuned experiment, a stage in which every run failed exits 1 naming the failures, and ``task=``
resetting the task node so that an experiment's task keys do not reach another task."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from bench.campaigns.tuning import plan_from_command_line
from bench.campaigns.tuning.command_line import CommandLineTuning, grid_values, log_spaced, tuning_node
from bench.campaigns.tuning.plan import compose, task_reset
from bench.cli.tune import main as tune
from bench.formats.errors import ConfigError
from bench.tasks.toy import Toy

FACTORY = f"{__name__}:make_task"


def make_task() -> Toy:
    """A task of one's own that takes no arguments: a key leaked into it would fail the run."""
    return Toy(dim=3)


def broken_task() -> Toy:
    raise RuntimeError("this task cannot be built")


def test_grid_values_log_spaced_or_listed():
    assert grid_values("1e-4:1e-1:7", "x") == [0.0001, 0.000316, 0.001, 0.00316, 0.01, 0.0316, 0.1]
    assert log_spaced(0.5, 0.5 * 10**6, 7)[-1] == 5e5
    assert grid_values("5,10", "x") == [5, 10] and grid_values("0.5,0.8", "x") == [0.5, 0.8]
    for bad in ("1:0.1:3", "a:b:3", "0:1:3", "1,1", "[1]"):
        with pytest.raises(ConfigError):
            grid_values(bad, bad)


def test_the_grid_goes_to_lookaheads_inner_optimizer_and_per_option():
    options = CommandLineTuning(
        optimizers=["adam", "lookahead"], grids=["optimizer.lr=1e-3:1e-1:3", "lookahead:optimizer.k=5,10"]
    )
    study = plan_from_command_line(["task=toy", "hydra.sweep.dir=unused"], options)
    assert study.spec.grids == {
        "adam": {"optimizer.lr": [0.001, 0.01, 0.1]},
        "lookahead": {"optimizer.inner.lr": [0.001, 0.01, 0.1], "optimizer.k": [5, 10]},
    }
    assert study.spec.seeds == [0, 1] and len(study.spec.final_seeds) == 5 and study.spec.baseline == "adam"

    # Refusals, on the node alone (an optimizer with only optimizer.lr).
    def has_key(option: str, key: str) -> bool:
        return key == "optimizer.lr"

    with pytest.raises(ConfigError, match="has no setting optimizer.nesterov"):
        tuning_node(CommandLineTuning(["adam"], ["optimizer.nesterov=true,false"]), None, has_key)
    with pytest.raises(ConfigError, match="tuning.conditions"):
        tuning_node(CommandLineTuning(["adam"], ["task.dim=1,2"]), None, has_key)
    with pytest.raises(ConfigError, match="has no grid"):
        tuning_node(CommandLineTuning(["adam"], []), None, has_key)
    with pytest.raises(ConfigError, match="is not among --optimizers"):
        tuning_node(CommandLineTuning(["adam"], ["sgd:optimizer.lr=0.1"]), None, has_key)
    with pytest.raises(ConfigError, match="no optimizers to tune"):
        tuning_node(CommandLineTuning([], ["optimizer.lr=0.1"]), None, has_key)


def test_task_resets_the_experiments_task_keys():
    base = ["+experiment=optimizers_toy_tuned", "task=custom", f"task.factory={FACTORY}"]
    # The leak (negative control): composed as is, the experiment's task.dim reaches the custom task.
    assert OmegaConf.select(compose(base), "task.dim") == 16
    reset = task_reset(base)
    assert reset == ["~task.dim"]
    assert "dim" not in compose([*base, *reset]).task
    study = plan_from_command_line(base)
    assert "~task.dim" in study.base and study.spec.grids["adam"]  # the experiment's grids, without its task
    # The experiment's own task keeps its settings; no experiment, nothing to reset.
    assert task_reset(["+experiment=optimizers_toy_tuned", "task=toy"]) == []
    assert task_reset(["task=custom", f"task.factory={FACTORY}"]) == []


def test_adam_and_lookahead_tuned_on_a_custom_task_given_on_the_command_line(tmp_path, one_thread, capsys):
    arguments = [
        "task=custom",
        f"task.factory={FACTORY}",
        "estimator=rloo",
        "steps=3",
        "probe.draws=2",
        "progress=false",
        f"hydra.sweep.dir={tmp_path}",
        "--optimizers",
        "adam,lookahead",
        "--grid",
        "optimizer.lr=1e-2:1e-1:2",
        "--seeds",
        "0",
    ]
    assert tune(arguments) == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "tuning.json").read_text())
    assert {choice["optimizer"] for choice in document["choices"]} == {"adam", "lookahead"}
    assert all(choice["chosen"] is not None for choice in document["choices"])
    finals = list((tmp_path / "final").glob("*/*/summary.json"))
    assert len(finals) == 10 and {json.loads(path.read_text())["status"] for path in finals} == {"ok"}
    assert "[tune] stage 1, sweep 2 of 2: lookahead, 2 runs" in capsys.readouterr().err


def test_a_stage_where_every_run_failed_exits_1_listing_the_failures(tmp_path, capsys):
    arguments = [
        "task=custom",
        f"task.factory={__name__}:broken_task",
        "estimator=rloo",
        "steps=3",
        "progress=false",
        f"hydra.sweep.dir={tmp_path}",
        "--optimizers",
        "adam",
        "--grid",
        "optimizer.lr=0.01",
        "--seeds",
        "0",
    ]
    assert tune(arguments) == 1
    error = capsys.readouterr().err
    assert "error: every stage-1 run failed (1 runs)" in error
    assert "[failed] tune/adam/" in error and "this task cannot be built" in error
    assert not (tmp_path / "tuning.json").exists() and not (tmp_path / "final").exists()
