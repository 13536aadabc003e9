"""Sweeps that scale: Hydra's joblib and submitit launchers, resuming a killed sweep, and a report that shows
runs which diverged or failed."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from bench.run.sweep import launcher_threads
from tests.helpers import ROOT, run_cli

TOY_SWEEP = ["task=toy", "estimator=score_function,st,gumbel,exact", "seed=0,1", "steps=30", "probe.draws=4"]


def summaries(folder) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in folder.rglob("summary.json")}


def test_joblib_sweep_of_eight_runs(tmp_path):
    result = run_cli("bench", "-m", *TOY_SWEEP, "hydra/launcher=joblib", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    found = summaries(tmp_path)
    assert len(found) == 8 and {s["status"] for s in found.values()} == {"ok"}
    cores = len(os.sched_getaffinity(0))
    jobs = min(cores, 8)  # joblib's n_jobs=-1: one job per core
    assert {s["threads"] for s in found.values()} == {max(1, cores // jobs)}


def test_threads_per_job_never_oversubscribe():
    cores = len(os.sched_getaffinity(0))
    for n_jobs in (-1, 1, 2, cores, 4 * cores):
        threads = launcher_threads(
            {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": n_jobs}
        )
        parallel = cores if n_jobs == -1 else n_jobs
        assert threads >= 1 and (threads * parallel <= cores or threads == 1)
    assert launcher_threads({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}) is None


@pytest.mark.slow
def test_submitit_local_sweep_of_eight_runs(tmp_path):
    result = run_cli(
        "bench", "-m", *TOY_SWEEP, "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    found = summaries(tmp_path)
    assert len(found) == 8 and {s["status"] for s in found.values()} == {"ok"}, found


def test_killed_sweep_resumes_only_the_missing_runs(tmp_path):
    arguments = [
        "bench",
        "-m",
        "task=toy",
        "estimator=score_function,st,gumbel",
        "seed=0,1",
        "steps=400",
        "probe.draws=4",
        "progress=false",
        f"hydra.sweep.dir={tmp_path}",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", *arguments],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while len(summaries(tmp_path)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {name: (tmp_path / name / "summary.json").stat().st_mtime_ns for name in summaries(tmp_path)}
    assert 2 <= len(before) < 6, "the sweep must be killed part-way for this test to mean anything"
    assert all(s["status"] == "ok" for s in summaries(tmp_path).values())

    result = run_cli(*arguments)
    assert result.returncode == 0, result.stderr
    after = summaries(tmp_path)
    assert len(after) == 6 and {s["status"] for s in after.values()} == {"ok"}
    assert result.stderr.count("[done]") == len(before)
    for name, modified in before.items():  # finished runs were skipped, not redone
        assert (tmp_path / name / "summary.json").stat().st_mtime_ns == modified
    assert result.stdout.count("status=ok") + result.stderr.count("status=ok") == 6 - len(before)

    forced = run_cli(
        "bench",
        "-m",
        "task=toy",
        "estimator=st",
        "seed=0",
        "steps=400",
        "probe.draws=4",
        "force=true",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert forced.returncode == 0 and "[done]" not in forced.stderr
    # A different configuration given a finished run's folder is neither mistaken for it nor allowed to
    # overwrite it: exit 2, the folder as it was (force=true replaces it: tests/run/test_untrusted_input).
    folder = next(iter(before))  # e.g. "estimator=st,seed=0@1f0c2a9e"; its overrides are in .hydra/
    written = yaml.safe_load((tmp_path / folder / ".hydra" / "overrides.yaml").read_text())
    overrides = [item.replace("steps=400", "steps=401") for item in written]
    changed = run_cli("bench", *overrides, f"hydra.run.dir='{tmp_path / folder}'")
    assert changed.returncode == 2 and "holds an ok run of another configuration" in changed.stderr
    assert json.loads((tmp_path / folder / "summary.json").read_text())["steps"] == 400


def test_report_marks_diverged_and_failed_runs(tmp_path):
    result = run_cli(
        "bench",
        "-m",
        "task=gaussian",
        "estimator=reparam,score_function,rloo,gumbel",
        "optimizer=sgd",
        "optimizer.lr=0.2",
        "seed=0,1",
        "steps=100",
        "probe.every=20",
        "probe.draws=16",
        "samples=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    statuses = {(s["estimator"], s["seed"]): s["status"] for s in summaries(tmp_path).values()}
    # SGD at lr = 0.2 is stable for the low-variance reparameterization gradient, not for REINFORCE's.
    assert {statuses[("reparam", 0)], statuses[("reparam", 1)]} == {"ok"}
    assert "diverged" in {statuses[("score_function", 0)], statuses[("score_function", 1)]}
    assert statuses[("rloo", 0)] == "failed" and statuses[("gumbel", 0)] == "skipped"
    report = run_cli("bench.report", str(tmp_path))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert (
        "Runs that did not finish" in text and "diverged" in text and "failed" in text and "skipped" in text
    )
    for stem in ("gaussian_objective", "gaussian_variance", "gaussian_bias_variance", "gaussian_train_loss"):
        assert (tmp_path / "report" / f"{stem}.png").exists(), stem
    table = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert set(table["status"]) == {"ok", "diverged", "failed", "skipped"}
