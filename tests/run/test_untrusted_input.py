"""Overrides and run folders as untrusted input: each hole an adversarial review found, as a test.

Unknown keys with or without ``+`` are refused before Hydra runs, with the closest key; names that become
paths are refused; values that would crash, hang or allocate without bound exit 2 naming their key before
anything is allocated; a data file of the wrong geometry and an f of the wrong shape are named at setup; a
full disk exits 2 and the run resumes; a folder holding another configuration's run is left untouched
without ``force=true`` (a single run exits 2, a sweep runs the rest and exits 2 listing it); a checkpoint of
other code is not resumed from (``resume=auto`` starts over saying why, ``resume=strict`` refuses).

Everything runs in-process on the toy task (``bench.cli.main.entry`` is what ``python -m bench`` calls).
"""

from __future__ import annotations

import errno
import json
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from bench.cli.main import entry
from bench.formats.errors import ConfigError
from bench.run import checkpoint
from bench.run.build import setup
from bench.run.folders import FolderTaken
from bench.run.preflight import preflight
from bench.run.runner import run
from bench.tasks.base import Task
from tests.helpers import make_config

TOY = ("task=toy", "estimator=rloo", "samples=2", "probe.draws=4", "probe.every=0", "threads=1")


def exit_code(arguments: list[str], monkeypatch) -> int:
    """``python -m bench ARGUMENTS`` in this process; its exit code (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", ["bench", *arguments])
    try:
        entry(arguments)
    except SystemExit as stop:
        return stop.code
    return 0


# ---- the command line, before Hydra runs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["+probe.draw=64"], "there is no key probe.draw (did you mean probe.draws?)"),
        (
            ["estimator=gumbel", "estimator.tua=0.5"],
            "there is no key estimator.tua (did you mean estimator.tau?)",
        ),
        (["-m", "estimator=gumbel,rloo", "estimator.tau=0.5"], "(with estimator=rloo): there is no key"),
        (["task=custom", "task.factory=m:f", "task.dim=3"], "with a plus sign: +task.dim=3"),
        (
            ["-m", "task=toy", "task.name=../../x", "seed=0,1"],
            "task.name='../../x' contains a path separator",
        ),
    ],
)
def test_unknown_keys_and_unsafe_names_are_refused_before_hydra_runs(arguments, message):
    with pytest.raises(ConfigError) as refused:
        preflight(arguments)
    assert message in str(refused.value)


def test_keys_that_exist_a_custom_tasks_arguments_and_an_experiments_nodes_pass():
    for arguments in (
        ["task=custom", "task.factory=m:f", "+task.dim=3"],  # the factory's own argument
        ["+study.draws=3", "probe.draws=8"],  # a node that experiments add on purpose; a key that exists
        ["optimizer=lookahead", "optimizer.inner.lr=0.1"],
    ):
        preflight(arguments)


def test_the_crafted_sweep_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    arguments = ["-m", *TOY, "steps=30", "task.name=../../x", "seed=0,1", f"hydra.sweep.dir={tmp_path}/s/a"]
    assert exit_code(arguments, monkeypatch) == 2
    assert "task.name='../../x' contains a path separator" in capsys.readouterr().err
    assert list(tmp_path.rglob("*")) == []


# ---- values refused when the run is built, before anything is allocated ---------------------------------


REFUSED = [
    ({"seed": 100000000000000000000000}, "seed must be a whole number from 0 to 4294967295"),
    ({"threads": -3}, "threads must be at least 1"),
    ({"threads": 0}, "threads must be at least 1"),
    ({"task.name": "a/b"}, "task.name='a/b' contains a path separator"),
    ({"preflight.memory_limit": "lots"}, "preflight.memory_limit must be a size"),
    # 10^9 draws: beyond the 10^6 any report needs (a per-draw loop of them ran out of memory on the toy).
    ({"probe.draws": 1000000000}, "probe.draws must be from 2 (a variance needs two draws) to 1,000,000"),
    # 10^6 draws of the toy's 2 logits: 8 MB for their gradients and 32 MB for the vectorized draws' samples
    # and noise; 10^12 samples: 16 TB for one estimate.
    (
        {"probe.draws": 1000000, "preflight.memory_limit": "10MB"},
        "one probe would need at least 38.1 MiB (probe.draws=1000000, samples=2",
    ),
    (
        {"samples": 1000000000000, "preflight.memory_limit": "1GB"},
        "one gradient estimate would need at least 14.6 TiB (samples=1000000000000",
    ),
    # The limit is applied (a negative control): 256 draws do not fit into one kilobyte, 4 fit into 1 MB.
    ({"probe.draws": 256, "preflight.memory_limit": "1KB"}, "than preflight.memory_limit (1000 bytes)"),
    ({"probe.draws": 4, "preflight.memory_limit": "1MB"}, None),
]


def test_values_that_would_crash_hang_or_mislead_are_refused_naming_the_key(tmp_path):
    base = make_config(*TOY, "steps=2")
    for index, (values, message) in enumerate(REFUSED):
        config = base.copy()
        for key, value in values.items():
            OmegaConf.update(config, key, value)
        folder = tmp_path / str(index)
        if message is None:
            assert run(config, folder)["status"] == "ok"
            continue
        with pytest.raises(ConfigError) as refused:
            run(config, folder)
        assert message in str(refused.value), str(refused.value)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["steps"] == 0  # recorded, nothing trained


def test_a_refused_value_exits_2(tmp_path, monkeypatch, capsys):
    arguments = [*TOY, "seed=100000000000000000000000", f"hydra.run.dir={tmp_path}/seed"]
    assert exit_code(arguments, monkeypatch) == 2
    assert "error: seed must be a whole number" in capsys.readouterr().err


class WrongShape(Task):
    """Three coins whose f returns one value per coin and sample, summed the wrong way: shape (3,)."""

    latent = "categorical"

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3, 2))

    def distribution(self, batch=None) -> Tensor:
        return self.logits

    def objective(self, batch=None):
        return lambda z: z[..., 1].sum(0)  # (S, 3, 2) -> (3,): summed over the samples, not kept

    def probed_parameters(self) -> dict[str, Tensor]:
        return {"logits": self.logits}

    def evaluate(self) -> dict[str, float]:
        return {"objective": 0.0}


def make_wrong_shape() -> WrongShape:
    return WrongShape()


@pytest.mark.parametrize("estimator", ["rloo", "gumbel"])
def test_an_f_of_the_wrong_shape_is_named_at_setup_with_the_shapes_it_may_return(estimator):
    config = make_config(
        "task=custom", f"task.factory={__name__}:make_wrong_shape", f"estimator={estimator}", "threads=1"
    )
    with pytest.raises(ConfigError) as refused:
        setup(config)
    assert (
        "returned values of shape (3,) for samples of shape (2, 3, 2); it must return a tensor of shape "
        "(2,) or (2, 3)" in str(refused.value)
    ), str(refused.value)


def test_a_data_file_of_another_geometry_is_not_mnist(tmp_path):
    images = np.zeros((20, 10), dtype=np.uint8)  # 10-pixel images
    np.savez(tmp_path / "small.npz", x_train=images, x_test=images)
    config = make_config("task=vae", "task.data=mnist", f"task.path={tmp_path / 'small.npz'}", "threads=1")
    with pytest.raises(ConfigError) as refused:
        setup(config)
    assert f"task.data=mnist: {tmp_path / 'small.npz'} holds images of 10 pixels, but mnist has 784" in str(
        refused.value
    )


def test_a_full_disk_exits_2_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    arguments = [*TOY, "steps=6", "checkpoint.every=2", f"hydra.run.dir={folder}", "progress=false"]
    written = []

    def full_after_one(path, data, *args, **kwargs):  # the second checkpoint finds the disk full
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        original(path, data, *args, **kwargs)

    original = checkpoint.atomic_write_bytes
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full_after_one)
    assert exit_code(arguments, monkeypatch) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert (
        "the disk is full ([Errno 28] No space left on device" in error and "resumes from its last" in error
    )
    assert (
        "Traceback" not in error and json.loads((folder / "summary.json").read_text())["status"] == "failed"
    )
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", original)
    summary = run(make_config(*TOY, "steps=6", "checkpoint.every=2"), folder)  # what re-running does
    assert summary["status"] == "ok" and summary["resumed_from"] == 2, summary


# ---- no silent overwrite ---------------------------------------------------------------------------------


def test_a_folder_holding_another_configurations_run_is_left_untouched_without_force(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "run"
    assert run(make_config(*TOY, "steps=3"), folder)["status"] == "ok"
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert exit_code([*TOY, "steps=4", f"hydra.run.dir={folder}"], monkeypatch) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert f"{folder} holds an ok run of another configuration" in message and "force=true" in message
    after = {
        path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and path.name != "main.log"
    }
    assert after == before  # not even Hydra's .hydra/ files (main.log: Hydra's log, empty)
    config = make_config(*TOY, "steps=4", "force=true")
    assert run(config, folder)["steps"] == 4  # force=true replaces it

    # The same for checkpoints of another configuration (a run stopped after its checkpoint at step 2).
    stopped = tmp_path / "stopped"
    run(make_config(*TOY, "steps=4", "checkpoint.every=2"), stopped)
    (stopped / "summary.json").unlink()
    kept = sorted(path.name for path in (stopped / "checkpoints").iterdir())
    with pytest.raises(FolderTaken, match="holds checkpoints of another configuration"):
        run(make_config(*TOY, "steps=5", "checkpoint.every=2"), stopped)
    assert sorted(path.name for path in (stopped / "checkpoints").iterdir()) == kept
    assert not (stopped / "summary.json").exists()


def test_a_sweep_skips_a_folder_of_another_run_runs_the_rest_and_exits_2_listing_it(
    tmp_path, monkeypatch, capsys
):
    sweep = tmp_path / "sweep"
    arguments = ["-m", *TOY, "steps=3", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert exit_code(arguments, monkeypatch) == 0
    folders = sorted(path.parent for path in sweep.rglob("summary.json"))
    assert len(folders) == 2
    by_seed = {json.loads((folder / "summary.json").read_text())["seed"]: folder for folder in folders}
    taken, other = by_seed[0], by_seed[1]  # seed 1's finished run put where seed 0's was: another config
    for name in ("summary.json", "metrics.csv"):
        (taken / name).write_bytes((other / name).read_bytes())
    capsys.readouterr()
    arguments[-2] = "seed=0,1,2"  # seed 0 is refused, seed 1 finished, seed 2 runs
    assert exit_code(arguments, monkeypatch) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "1 run folder(s) of this sweep hold another configuration's run and were left untouched" in error
    assert f"{taken} holds an ok run of another configuration" in error
    assert (taken / "summary.json").read_bytes() == (other / "summary.json").read_bytes()
    seeds = sorted(json.loads(path.read_text())["seed"] for path in sweep.rglob("summary.json"))
    assert seeds == [1, 1, 2] and not (sweep / ".refused").exists()  # seed 2 ran; seed 0's folder as it was


# ---- a resume after a change of code ---------------------------------------------------------------------


def test_a_checkpoint_of_other_code_is_not_resumed_from(tmp_path, monkeypatch, capsys):
    config = make_config(*TOY, "steps=6", "checkpoint.every=2")
    reference = run(config, tmp_path)
    (tmp_path / "summary.json").unlink()  # as if the run had been stopped after its checkpoint at step 4
    saved = checkpoint.read_sidecar(checkpoint.checkpoint_path(tmp_path, 4, "latest"))["code_version"]
    assert saved == checkpoint.code_version() and saved["source_hash"] == reference["source_hash"]

    changed = {**saved, "source_hash": "0" * 16, "git_commit": "f" * 40}  # the code was changed since
    monkeypatch.setattr(checkpoint, "code_version", lambda: changed)
    config.resume = "strict"
    with pytest.raises(ConfigError, match="resume=strict: checkpoint .* was written by other code"):
        run(config, tmp_path)
    config.resume = "auto"
    summary = run(config, tmp_path)
    assert summary["status"] == "ok" and summary["resumed_from"] is None, summary  # started over
    assert "was written by other code" in summary["resume_refused"]
    assert "[resume] the code changed: starting over" in capsys.readouterr().err
    assert (
        checkpoint.read_sidecar(checkpoint.checkpoint_path(tmp_path, 6, "latest"))["code_version"] == changed
    )
