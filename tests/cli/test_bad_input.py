"""Bad input (an unknown name, a bad value, a missing file, an unwritable folder) gets one clear paragraph
and exit code 2, never a traceback.

The command line is checked before Hydra runs (``bench.run.preflight``); values when the run is built
(``bench.run.runner.check_settings`` and the constructors). Subprocesses (``python -m bench`` as a user runs
it, ~3 s each) cover each way an error reaches the user; the many value checks behind the same path run
in-process through ``bench.run.runner.run``, which is what the command line calls.
"""

from __future__ import annotations

import json
import os

import pytest

from bench.formats.errors import ConfigError
from bench.run.preflight import preflight
from bench.run.runner import run
from tests.helpers import CONF, make_config, run_cli

REQUIRED = {"task", "estimator", "optimizer", "seed", "status", "steps", "error", "wall_time_s", "git_commit"}


def options(group: str) -> str:
    """The options of a config group as the messages list them: its yaml files' names, sorted."""
    return ", ".join(sorted(path.stem for path in (CONF / group).glob("*.yaml")))


def paragraph(result) -> str:
    """The error text as one line; asserts that it is a refusal (exit 2) without a traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    return " ".join(result.stderr.split())


def test_unknown_names_exit_2_listing_the_options(tmp_path):
    message = paragraph(run_cli("bench", "task=nope", f"hydra.run.dir={tmp_path}/single"))
    assert "unknown task 'nope'" in message
    assert f"Available task options: {options('task')}." in message
    assert "custom, embedding, gaussian" in options("task")  # the list is the folder's, not an empty one
    assert not (tmp_path / "single").exists()  # refused before anything was written

    # One bad name in a sweep's comma list refuses the whole sweep before any of its runs starts.
    message = paragraph(
        run_cli("bench", "-m", "task=toy", "estimator=rloo,nope,st", f"hydra.sweep.dir={tmp_path}/sweep")
    )
    assert "unknown estimator 'nope' in 'estimator=rloo,nope,st'" in message
    assert "Available estimator options:" in message and "score_function" in message
    assert not (tmp_path / "sweep").exists()


def test_unknown_key_exits_2_with_the_closest_key(tmp_path):
    folder = tmp_path / "run"
    message = paragraph(
        run_cli("bench", "task=toy", "estimator=gumbel", "estimator.tua=0.5", f"hydra.run.dir={folder}")
    )
    assert "there is no key estimator.tua (did you mean estimator.tau?)" in message
    assert not folder.exists()  # refused before Hydra ran


def test_unwritable_results_folder_exits_2(tmp_path):
    message = paragraph(run_cli("bench", "task=toy", "hydra.run.dir=/proc/forbidden/run"))
    assert "cannot write the results into /proc/forbidden/run" in message and "hydra.run.dir=PATH" in message
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = paragraph(run_cli("bench", "-m", "task=toy", f"hydra.sweep.dir={blocker}/sweep"))
    assert f"{blocker} is a file, not a folder" in message


def test_help_still_works():
    result = run_cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert f"task: {options('task')}" in result.stdout
    assert f"estimator: {options('estimator')}" in result.stdout


def test_values_refused_when_the_run_is_built_exit_2(tmp_path):
    message = paragraph(
        run_cli("bench", "task=toy", "optimizer=lookahead", "optimizer.k=0", f"hydra.run.dir={tmp_path}/k")
    )
    assert "k (inner steps per slow update) must be an integer >= 1, got k=0" in message
    summary = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert summary["status"] == "failed" and "k=0" in summary["error"]  # complete, with the reason

    empty = tmp_path / "mnist.npz"
    empty.write_text("")
    message = paragraph(
        run_cli(
            "bench", "task=vae", "task.data=mnist", f"task.path={empty}", f"hydra.run.dir={tmp_path}/data"
        )
    )
    assert f"{empty} is not a readable .npz file" in message and "task.path=DIR" in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer=lookahead", "optimizer.alpha=0"], "(slow step size) must be in (0, 1], got alpha=0"),
        (["optimizer=lookahead", "optimizer.alpha=1.5"], "must be in (0, 1], got alpha=1.5"),
        (["optimizer.lr=0"], "optimizer.lr must be a number > 0, got optimizer.lr=0"),
        (["optimizer=sgd", "optimizer.lr=-0.1"], "optimizer.lr must be a number > 0, got optimizer.lr=-0.1"),
        (["optimizer=lookahead", "optimizer.inner.lr=-1"], "optimizer.inner.lr must be a number > 0"),
        (["estimator=gumbel", "estimator.tau=0"], "tau must be a finite number > 0"),
        (["estimator=st", "estimator.tau=-1"], "tau must be a finite number > 0"),
        (["estimator=rloo", "samples=1"], "needs at least 2 samples per gradient estimate, got samples=1"),
        (["probe.draws=1"], "probe.draws must be from 2 (a variance needs two draws)"),
        (["steps=0"], "steps must be >= 1, got steps=0"),
        (["steps=-5"], "steps must be >= 1, got steps=-5"),
        (["steps=abc"], "steps must be a whole number, got steps='abc'"),
        (["seed=1.5"], "seed must be a whole number, got seed=1.5"),
        (["samples=2.5"], "samples must be a whole number, got samples=2.5"),
        # Missing data files are downloaded (bench.tasks.download): from a closed port, they cannot be.
        (
            ["task=vae", "task.data=mnist", "task.path=/nonexistent/mnist", "task.mirror=http://127.0.0.1:9"],
            "could not download 2 file(s) into /nonexistent/mnist",
        ),
        (["task=vae", "task.data=mnist", "task.path=/nonexistent/mnist.npz"], "/nonexistent/mnist.npz does"),
    ],
)
def test_bad_values_fail_the_run_with_a_named_message(tmp_path, overrides, expected):
    config = make_config("task=toy", "estimator=gumbel", "steps=5", "probe.draws=4", *overrides)
    with pytest.raises(ConfigError) as raised:
        run(config, tmp_path)
    assert expected in str(raised.value)
    summary = json.loads((tmp_path / "summary.json").read_text())  # a complete record, for sweeps
    assert REQUIRED <= summary.keys() and summary["status"] == "failed" and expected in summary["error"]
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["+experiment=nope"], "unknown experiment 'nope' in '+experiment=nope'. Available experiment"),
        (["experiment=vq_estimators"], "is added with a plus sign: +experiment=vq_estimators"),
        (["optimizer=lookahead", "optimizer@optimizer.inner=nesterov"], "unknown optimizer 'nesterov'"),
        (["-m", "task=toy,gauss,vay"], "unknown tasks 'gauss', 'vay' in 'task=toy,gauss,vay'"),
        (["task=toy,gaussian"], "'task=toy,gaussian' lists several values, which makes a sweep: add -m"),
        (["task=toy,"], "cannot read the command-line override 'task=toy,'"),
        (["estimator=gumble"], "unknown estimator 'gumble' in 'estimator=gumble' (did you mean gumbel?)."),
        (["steps"], "cannot read the command-line override 'steps'"),
    ],
)
def test_command_line_checks(arguments, expected):
    with pytest.raises(ConfigError) as raised:
        preflight(arguments)
    assert expected in str(raised.value)


def test_command_line_checks_accept_good_input(tmp_path):
    preflight(
        ["-m", "task=toy,gaussian", "estimator=glob(*)", "seed=range(3)", f"hydra.sweep.dir={tmp_path}"]
    )
    preflight(["optimizer=lookahead", "optimizer@optimizer.inner=sgd", "+experiment=vq_estimators"])
    preflight(["--cfg", "job", "hydra.run.dir=/proc/not_checked_when_nothing_is_written"])
    preflight([f"hydra.run.dir={tmp_path}/new/folder/" + "${now:%H-%M-%S}"])  # created later by Hydra


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="is not writable"):
        preflight([f"hydra.run.dir={locked}/run"])
