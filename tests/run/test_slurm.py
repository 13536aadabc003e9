"""Sweeps on a real SLURM cluster through Hydra's submitit launcher: every run ok with torch's threads equal
to the CPUs each job was given, and a job stopped the way a time limit does it (SIGUSR2, then submitit's
``scontrol requeue``) comes back and resumes from its checkpoint to the same metrics.

``scripts/slurm_up.sh`` starts a one-node cluster on this machine (CI runs it before the tests). Without
``sbatch`` these tests skip; with ``CI=true`` in the environment a missing cluster is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.run.runner import run
from tests.helpers import ROOT, make_config

pytestmark = pytest.mark.slurm


def unavailable() -> str | None:
    """Why SLURM cannot run jobs here, or None when it can."""
    if shutil.which("sbatch") is None:
        return "no sbatch: SLURM is not installed (scripts/slurm_up.sh starts a one-node cluster, as root)"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo does not answer ({error}); scripts/slurm_up.sh starts the cluster"
    if not re.search(r"^(idle|mixed|allocated|completing)", states.stdout, re.MULTILINE):
        found = (states.stdout or states.stderr).strip() or "nothing"
        return f"no SLURM node is up (sinfo says {found!r}); scripts/slurm_up.sh starts one"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, but SLURM is not available: {reason}")
        pytest.skip(reason)


def submitit(cpus: int) -> tuple[str, ...]:
    return (
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.cpus_per_task={cpus}",
        "hydra.launcher.timeout_min=10",
        "progress=false",
    )


def summaries(folder: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in folder.rglob("summary.json")}


def job_state(job: str) -> tuple[str, str]:
    """(state, reason) of a SLURM job, e.g. ("PENDING", "BeginTime"); ("", "") once it has left the queue."""
    listed = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True, timeout=20, check=False
    )
    state, _, reason = listed.stdout.strip().partition("|")
    return state, reason


def wait(condition, what: str, timeout: float, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen (sweep exit {process.poll()}): {log.read_text()[-3000:]}")
        time.sleep(0.1)


def test_a_slurm_sweep_runs_every_job_with_its_cpus_and_a_job_stopped_by_its_time_limit_resumes(
    slurm, tmp_path, one_thread
):
    # Two jobs (an array) of one CPU each. One of them is stopped as a time limit stops it: SIGUSR2 ahead of
    # the limit (submitit asks for --signal=USR2@...). With timeout_min=10 submitit takes any USR2 for the
    # time limit's warning (it guarantees a job timeout_min - 10 minutes) and, with max_num_timeout=1,
    # requeues the job once (scontrol requeue). The requeued job resumes from its checkpoint.
    settings = (
        "task=toy",
        "estimator=rloo",
        "samples=4",
        "seed=0,1",
        "steps=5000",
        "probe.every=500",
        "probe.draws=4",
        "checkpoint.every=100",
        "checkpoint.steps=[0,4000]",
    )
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "-m",
                *settings,
                *submitit(cpus=1),
                "hydra.launcher.max_num_timeout=1",
                f"hydra.sweep.dir={sweep}",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # The uninterrupted run of seed 0, in this process while the jobs start (threads=1: one CPU).
        reference_settings = tuple(item.replace("seed=0,1", "seed=0") for item in settings)
        reference = run(make_config(*reference_settings, "threads=1"), tmp_path / "reference")
        assert reference["status"] == "ok"

        def checkpointed():
            return next(sweep.glob("*seed=0*/checkpoints/latest_*.json"), None)

        folder = wait(checkpointed, "a checkpoint", 180, process, log).parent.parent
        tasks = [path.name for path in (sweep / ".submitit").iterdir() if re.match(r"^\d+_\d+$", path.name)]
        assert len(tasks) == 2  # two SLURM jobs, the tasks of an array
        job = f"{tasks[0].split('_')[0]}_0"  # seed 0
        assert job_state(job)[0] == "RUNNING"
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=20)
        # submitit's handler requeues the job; SLURM holds a requeued job back (BeginTime) for cred_expire.
        wait(lambda: job_state(job)[0] == "PENDING", "the requeue", 120, process, log)
        interrupted = json.loads((folder / "summary.json").read_text())
        assert interrupted["status"] == "interrupted" and "SIGUSR2" in interrupted["error"], interrupted
        stopped = interrupted["steps"]
        assert 100 <= stopped < 5000
        # Not forced to start at once (scontrol update StartTime=now): on the node that ran it, a requeued job
        # cannot start until its old credential expires (slurm.conf AuthInfo=cred_expire, 10 s with
        # scripts/slurm_up.sh, 120 s by default); started before that, slurmd kills it ("Job credential
        # revoked") and the run is lost.

        process.wait(timeout=300)
        assert process.returncode == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    found = summaries(sweep)
    assert len(found) == 2 and {s["status"] for s in found.values()} == {"ok"}, found
    assert {s["threads"] for s in found.values()} == {1}  # hydra.launcher.cpus_per_task=1
    summary = found[folder.name]
    assert summary["steps"] == 5000 and summary["resumed_from"] == stopped and summary["resumes"] == 1
    assert (folder / "metrics.csv").read_bytes() == (tmp_path / "reference" / "metrics.csv").read_bytes()
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False)
    assert "Restarts=1" in shown.stdout, shown.stdout  # one job, run twice
    job_log = next((sweep / ".submitit" / job).glob("*_log.err")).read_text()
    assert "this job is timed-out" in job_log and "Job not requeued" not in job_log
