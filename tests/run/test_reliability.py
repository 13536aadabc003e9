"""Reliability: divergence, interruption (SIGKILL, SIGINT), reproducibility and provenance.

Stop signals and resuming from checkpoints are ``tests/run/test_resume.py``'s.

Runs go through ``python -m bench`` as a user starts them, in a subprocess, except where a fault has to be
injected into the training loop (a NaN gradient), which runs ``bench.run.runner.run`` in-process.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from bench.formats import files as results
from bench.run import checkpoint
from bench.run.runner import run
from bench.tasks.gaussian import GaussianTask
from tests.helpers import ROOT, make_config, run_cli

CONTRACT = {"task", "estimator", "optimizer", "seed", "status", "steps", "wall_time_s", "final_loss", "error"}
PROVENANCE = {"python_version", "torch_version", "numpy_version", "hydra_version", "git_commit"}


def summaries(root: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in root.rglob("summary.json")}


# --- divergence ----------------------------------------------------------------------------------------


def test_divergence_ends_the_run_with_its_step_and_the_sweep_goes_on(tmp_path):
    # SGD with lr = 1e4 on E(z − 1)², z ~ N(μ, σ²) multiplies μ − 1 by about −2·1e4 per step: the loss
    # overflows float32 within a few steps. lr = 0.01 trains normally.
    sweep = tmp_path / "sweep"
    result = run_cli(
        "bench",
        "-m",
        "task=gaussian",
        "estimator=reparam",
        "optimizer=sgd",
        "optimizer.lr=1e4,0.01",
        "steps=30",
        "probe.every=10",
        "probe.draws=4",
        "log_every=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    runs = summaries(sweep)
    assert len(runs) == 2
    diverged = next(run for name, run in runs.items() if "lr=10000" in name)
    healthy = next(run for name, run in runs.items() if "lr=0.01" in name)
    assert healthy["status"] == "ok" and healthy["steps"] == 30 and math.isfinite(healthy["final_loss"])
    step = diverged["diverged_step"]
    # `steps` counts the steps that finished; the one that diverged did not.
    assert diverged["status"] == "diverged" and diverged["steps"] == step - 1 and 1 <= step < 30
    assert "non-finite" in diverged["error"] and f"at step {step}" in diverged["error"]
    assert diverged["final_loss"] is None  # strict JSON: no number, not NaN
    # The metrics up to the divergence are kept: the step-0 probe and every training loss before it.
    run_dir = next(path for path in sweep.iterdir() if "lr=10000" in path.name)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics.step.max() <= step
    assert set(metrics[metrics.metric == "train_loss"].step) == set(range(1, step))
    assert metrics[(metrics.step == 0) & (metrics.metric == "grad_variance")].value.notna().all()

    # The report reads these runs and skips, with a warning, a malformed summary.json beside them.
    broken = sweep / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text('{"task": "gaussian", "estimator": ')  # cut short
    report = run_cli("bench.report", str(sweep))
    assert report.returncode == 0, report.stderr
    assert "skipping" in report.stderr and str(broken / "summary.json") in report.stderr
    table = pd.read_csv(sweep / "report" / "summary.csv")
    assert sorted(table.status) == ["diverged", "ok"]


def test_a_non_finite_gradient_with_a_finite_loss_diverges(tmp_path, monkeypatch):
    original = GaussianTask.loss

    def poisoned(self, estimator, samples, batch):
        loss = original(self, estimator, samples, batch)
        if self.mean.grad is not None:  # from the second step on: d/dμ √(0) = inf, the value stays the same
            loss = loss + torch.sqrt((self.mean - self.mean.detach()).pow(2).sum())
        return loss

    monkeypatch.setattr(GaussianTask, "loss", poisoned)
    config = make_config("task=gaussian", "estimator=reparam", "steps=10", "probe.draws=4", "log_every=1")
    summary = run(config, tmp_path)
    assert summary["status"] == "diverged" and summary["diverged_step"] == 2, summary
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


# --- interruption --------------------------------------------------------------------------------------


def rewrite_forever(path: Path, payloads: list[str]) -> None:  # runs in a child process
    index = 0
    while True:
        results.atomic_write_text(path, payloads[index % 2])
        index += 1


def test_atomic_writes_survive_sigkill_at_random_moments(tmp_path):
    # Two large payloads so that a non-atomic write would often be caught half-done.
    payloads = [json.dumps({"run": name, "values": list(range(40_000))}) for name in ("first", "second")]
    generator = random.Random(0)
    context = multiprocessing.get_context("fork")
    for attempt in range(20):
        path = tmp_path / f"{attempt}" / "summary.json"
        child = context.Process(target=rewrite_forever, args=(path, payloads))
        child.start()
        time.sleep(generator.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert not path.exists() or path.read_text() in payloads  # the old file or the new one, never half


def start(*arguments: str, cwd: Path = ROOT) -> subprocess.Popen:
    """``python -m bench ...`` in the background, with SIGINT at its default even if pytest ignores it."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *arguments],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(
    folder: Path, process: subprocess.Popen, pattern: str = "metrics.csv", timeout: float = 60
) -> None:
    """Wait until a file matching ``pattern`` appears below ``folder`` (the run is training)."""
    deadline = time.monotonic() + timeout
    while not (folder.exists() and any(folder.glob(pattern))):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {pattern} appeared in {folder}"
        time.sleep(0.01)


LONG_RUN = ("task=toy", "estimator=rloo", "samples=4", "steps=100000", "probe.every=5", "probe.draws=4")


def test_sigkill_leaves_a_complete_summary_or_none(tmp_path):
    # Killed while training, right as the metrics start being written, and a little later; metrics.csv is
    # rewritten (atomically) at every probe, so each kill has many chances to land inside a write.
    for attempt, delay in enumerate((0.0, 0.3)):
        directory = tmp_path / f"run{attempt}"
        process = start(*LONG_RUN, f"hydra.run.dir={directory}")
        wait_for(directory, process)
        time.sleep(delay)
        process.kill()
        process.communicate()
        metrics = pd.read_csv(directory / "metrics.csv")  # complete: header and whole rows
        assert list(metrics.columns) == ["step", "metric", "value"] and metrics.value.dtype == float
        assert not (
            directory / "summary.json"
        ).exists()  # killed mid-run: no summary, rather than half of one


def test_sigint_records_the_run_as_interrupted_with_a_checkpoint_and_exits_130(tmp_path):
    directory = tmp_path / "run"
    process = start(*LONG_RUN, f"hydra.run.dir={directory}")
    wait_for(directory, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted; the run was recorded as interrupted" in " ".join(
        stderr.split()
    )
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "interrupted (SIGINT)" in summary["error"]
    assert CONTRACT <= summary.keys()
    # It stopped at a step boundary, with a checkpoint of that step: re-running the command resumes it.
    saved = checkpoint.checkpoint_path(directory, summary["steps"], "latest")
    assert str(saved) in summary["error"]
    assert checkpoint.load(saved, summary["config_digest"])["step"] == summary["steps"] > 0


# --- reproducibility and provenance --------------------------------------------------------------------


def test_same_seed_gives_identical_metrics_twice_and_in_a_sweep(tmp_path):
    # Twice in a row, then in a sweep where seed 0 runs after seed 1 in the same process (no state may leak
    # from one run into the next).
    settings = ("task=toy", "estimator=rloo", "samples=4", "steps=60", "probe.every=20", "probe.draws=8")
    for name in ("first", "second"):
        result = run_cli("bench", *settings, "seed=0", f"hydra.run.dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr
    result = run_cli("bench", "-m", *settings, "seed=1,0", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr
    first = (tmp_path / "first" / "metrics.csv").read_bytes()
    assert (tmp_path / "second" / "metrics.csv").read_bytes() == first
    by_seed = {
        json.loads((path.parent / "summary.json").read_text())["seed"]: path.read_bytes()
        for path in (tmp_path / "sweep").rglob("metrics.csv")
    }
    assert by_seed[0] == first
    assert by_seed[1] != first  # another seed draws other samples

    # Every run records its resolved config and overrides, the versions and the commit.
    for directory in (
        tmp_path / "first",
        *(path.parent for path in (tmp_path / "sweep").rglob("summary.json")),
    ):
        assert (directory / ".hydra" / "config.yaml").exists() and (
            directory / ".hydra" / "overrides.yaml"
        ).exists()
        summary = json.loads((directory / "summary.json").read_text())
        assert CONTRACT | PROVENANCE <= summary.keys() and summary["status"] == "ok"
        assert summary["torch_version"] == torch.__version__
    config_text = (tmp_path / "first" / ".hydra" / "config.yaml").read_text()
    assert "steps: 60" in config_text and "_target_: bench.tasks.toy.Toy" in config_text
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert json.loads((tmp_path / "first" / "summary.json").read_text())["git_commit"] == expected


def test_vae_runs_are_reproducible_in_process(tmp_path):
    # The VAE adds data batches, network initialisation and a vectorized exact-reference probe to the draws.
    settings = (
        "task=vae",
        "estimator=gumbel_st",
        "steps=4",
        "probe.every=2",
        "probe.draws=4",
        "task.hidden=8",
    )
    small = ("task.variables=2", "task.classes=4", "task.probe_size=8", "seed=3")
    texts = []
    for name in ("a", "b"):
        summary = run(make_config(*settings, *small), tmp_path / name)
        assert summary["status"] == "ok", summary["error"]
        texts.append((tmp_path / name / "metrics.csv").read_text())
    assert texts[0] == texts[1] and "grad_variance" in texts[0]


def test_git_commit_is_null_outside_a_git_checkout(tmp_path, monkeypatch):
    # The package as if installed in a folder that is no checkout (a wheel in site-packages): no commit,
    # no "modified", and the provenance says so.
    from bench.formats import version

    monkeypatch.setattr(version, "PACKAGE", tmp_path / "bench")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # do not find a repository above
    version.git_commit.cache_clear(), version.code_version.cache_clear()
    try:
        assert version.git_commit() is None and version.git_modified() is None
        assert version.provenance()["git_commit"] is None
    finally:
        version.git_commit.cache_clear(), version.code_version.cache_clear()
