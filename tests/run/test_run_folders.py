"""A sweep's run folders: short, safe names (the keys that vary, a digest of every override), at most 120
characters whatever the overrides, and a re-run that finds its finished runs, also in folders named the old
way (Hydra's ``override_dirname``) or for other varying keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from bench.formats.contract import NOT_PART_OF_THE_RUN
from bench.formats.names import LIMIT, problem
from bench.run import sweep
from bench.run.sweep import (
    config_digest,
    finished_elsewhere,
    overrides_digest,
    remove_if_fresh,
    run_folder_name,
    sweep_progress,
    sweep_size,
    swept_keys,
)
from bench.tasks.toy import Toy

ARGUMENTS = {f"argument_{index:02d}": f"{index:02d}-" + "x/y:z" * 7 + "-end" for index in range(20)}


def make_task(**arguments: str) -> Toy:
    """The factory of the sweep below: 20 long string arguments, checked, and the toy task."""
    assert arguments == ARGUMENTS
    return Toy(dim=2)


def test_a_name_shows_the_varying_keys_and_a_digest_of_every_override():
    overrides = ["task=toy", "estimator=rloo", "seed=0", "steps=10"]
    name = run_folder_name(overrides, ["estimator", "seed"])
    assert name == f"estimator=rloo,seed=0@{overrides_digest(overrides)}"
    # The digest tells apart runs whose shown keys agree, and ignores keys that do not change the run.
    assert (
        run_folder_name(["task=toy", "estimator=rloo", "seed=0", "steps=11"], ["estimator", "seed"]) != name
    )
    assert run_folder_name([*overrides, "progress=false", "threads=1"], ["estimator", "seed"]) == name
    assert {"progress", "threads", "force"} <= set(NOT_PART_OF_THE_RUN)
    # Without the sweep's keys, every key is shown.
    assert run_folder_name(overrides).startswith("task=toy,estimator=rloo,seed=0,steps=10@")


def test_no_name_is_long_or_unsafe_whatever_the_overrides():
    long_values = [f"+task.{key}={value}" for key, value in ARGUMENTS.items()]
    overrides = ["task=custom", f"task.factory={__name__}:make_task", *long_values, "estimator=rloo"]
    names = {
        run_folder_name(overrides, None),
        run_folder_name(overrides, [override.split("=")[0] for override in overrides]),
        run_folder_name(["task.path=../../" + "a" * 300, "estimator=st"], ["task.path"]),
        run_folder_name(["task.name=/etc/passwd", "seed=1"], ["task.name"]),
    }
    assert all(len(name) <= LIMIT and problem(name) is None for name in names), names
    # Negative control: the names Hydra's override_dirname gave are over the limit and unsafe.
    assert len(",".join(overrides)) > LIMIT and problem(",".join(overrides)) is not None


def test_the_keys_that_vary_and_the_size_of_a_sweep():
    overrides = [
        "task=toy",
        "estimator=rloo,st,gumbel",
        "seed=0,1",
        "steps=10",
        "samples=2,2",
        "lr=range(1,4)",
    ]
    assert swept_keys(overrides) == ["estimator", "seed", "samples", "lr"]
    assert swept_keys(["seed=0", "estimator=rloo"]) == []
    assert sweep_size(overrides) == 3 * 2 * 2 * 3
    assert sweep_size(["seed=0"]) == 1


def test_a_key_on_the_command_line_replaces_the_experiments_sweep_of_it_in_the_count(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setattr(sweep, "LAUNCHED", False)

    def counted(task_overrides: list[str]) -> str:
        config = OmegaConf.create(
            {
                "hydra": {
                    # an experiment's sweep: 6 estimators x 10 seeds = 60 runs
                    "sweeper": {"params": {"estimator": "a,b,c,d,e,f", "seed": "range(10)"}},
                    "overrides": {"task": task_overrides, "hydra": []},
                    "sweep": {"subdir": "own"},
                }
            }
        )
        sweep.SweepLaunched().on_multirun_start(config)
        return next(o for o in config.hydra.overrides.hydra if sweep.SWEEP_SIZE in o).split("=")[-1]

    assert counted(["estimator=rloo,st"]) == str(2 * 10)  # Hydra runs 20, not 2 x 6 x 10
    assert counted(["seed=0,1", "+experiment=x"]) == str(6 * 2)
    assert counted([]) == str(60)  # negative control: nothing replaced


def test_progress_lines_count_the_runs_and_estimate_the_time_left():
    environment = {sweep.SWEEP_SIZE: "8", sweep.SWEEP_STARTED: str(__import__("time").time() - 90)}
    line = sweep_progress(3, "estimator=st@0123abcd", environment)
    # Three runs took 90 s: five more take about 150 s (2 min 30 s).
    assert line.startswith("[sweep] run 4 of 8: estimator=st@0123abcd (1 min 30 s since the sweep started")
    assert "about 2 min 30 s left" in line
    assert sweep_progress(0, "x", {}) == "[sweep] run 1: x"


def test_a_fresh_folder_is_removed_and_a_run_is_not(tmp_path):
    fresh, run = tmp_path / "fresh", tmp_path / "run"
    for folder in (fresh, run):
        (folder / ".hydra").mkdir(parents=True)
        (folder / "main.log").write_text("")
    (run / "metrics.csv").write_text("step,metric,value\n")
    assert remove_if_fresh(fresh) and not fresh.exists()
    assert not remove_if_fresh(run) and run.exists()


def in_process(*arguments: str) -> int:
    """``python -m bench ARGUMENTS`` in this process (torch imported once for every sweep of the test)."""
    from bench.cli import main as bench_main

    GlobalHydra.instance().clear()
    sweep.LAUNCHED, bench_main.STARTED = False, False
    saved = sys.argv
    sys.argv = ["bench", *arguments]
    try:
        bench_main.entry(list(arguments))
    except SystemExit as stop:
        return int(stop.code or 0)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
    return 0


def summaries(folder: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/summary.json")}


@pytest.mark.usefixtures("one_thread")
def test_a_custom_task_with_20_long_arguments_sweeps_and_resumes(tmp_path, capsys):
    arguments = [
        "-m",
        "task=custom",
        f"task.factory={__name__}:make_task",
        *(f"+task.{key}={value}" for key, value in ARGUMENTS.items()),
        "estimator=rloo,st",
        "seed=0,1",
        "steps=5",
        "probe.draws=4",
        "progress=false",
        f"hydra.sweep.dir={tmp_path}",
    ]
    assert in_process(*arguments) == 0, capsys.readouterr().err
    first = summaries(tmp_path)
    assert len(first) == 4 and {summary["status"] for summary in first.values()} == {"ok"}
    assert all(len(name) <= LIMIT and problem(name) is None for name in first), list(first)
    assert {name.split("@")[0] for name in first} == {
        f"estimator={estimator},seed={seed}" for estimator in ("rloo", "st") for seed in (0, 1)
    }
    assert "[sweep] run 4 of 4: " in capsys.readouterr().err
    # One run moved to a folder named for other varying keys (seed alone): the re-run finds all four.
    other = next(name for name in first if name.startswith("estimator=rloo,seed=0@"))
    (tmp_path / other).rename(tmp_path / ("seed=0@" + other.split("@")[1]))
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*/summary.json")}
    assert in_process(*arguments) == 0
    assert capsys.readouterr().err.count("[done]") == 4
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("*/summary.json")} == stamps
    assert len([path for path in tmp_path.iterdir() if path.is_dir()]) == 4  # no empty folder left behind


def test_a_run_in_a_folder_named_the_old_way_is_found_and_another_configuration_is_not(
    tmp_path, config_factory
):
    config = config_factory("task=toy", "estimator=rloo", "seed=0", "steps=5")
    old = tmp_path / "estimator=rloo,seed=0,steps=5,task=toy"  # Hydra's override_dirname named it
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({"status": "ok", "config_digest": config_digest(config)}))
    new = tmp_path / run_folder_name(["task=toy", "estimator=rloo", "seed=0", "steps=5"], ["seed"])
    assert finished_elsewhere(new, config, old.name) == old
    # Negative controls: a failed run, another configuration, a folder outside the sweep's.
    (old / "summary.json").write_text(
        json.dumps({"status": "failed", "config_digest": config_digest(config)})
    )
    assert finished_elsewhere(new, config, old.name) is None
    other = tmp_path / ("seed=1@" + new.name.split("@")[1])
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({"status": "ok", "config_digest": "another one"}))
    assert finished_elsewhere(new, config, old.name) is None
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    (outside / "summary.json").write_text(
        json.dumps({"status": "ok", "config_digest": config_digest(config)})
    )
    assert finished_elsewhere(new, config, f"../{outside.name}") is None
