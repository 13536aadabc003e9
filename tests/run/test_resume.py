"""Stop signals and resuming: a run stopped by a signal saves a checkpoint, records ``interrupted`` and hands
the signal on; re-running it continues from the checkpoint to the same metrics, byte for byte.

One test goes through ``python -m bench`` as a user (or a cluster) starts it; the others run
``bench.run.runner.run`` in-process and send the signal from a helper thread, which is enough to check the
order of events (checkpoint, summary, then the previous handler).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bench.run import checkpoint
from bench.run.runner import run
from bench.run.signals import Interrupted, StopSignals, stop_signal_numbers
from bench.run.sweep import allocation_threads, available_cores
from tests.helpers import make_config, run_cli
from tests.run.test_reliability import start, wait_for

TOY = ("task=toy", "estimator=rloo", "samples=4", "probe.every=100", "probe.draws=4", "threads=1")


def test_a_run_stopped_by_sigterm_resumes_to_byte_identical_metrics(tmp_path, one_thread):
    settings = (*TOY, "steps=1000", "checkpoint.every=100", "checkpoint.steps=[0,700]")
    reference = run(make_config(*settings), tmp_path / "reference")  # uninterrupted, same threads
    assert reference["status"] == "ok" and reference["resumed_from"] is None and reference["resumes"] == 0

    directory = tmp_path / "run"
    process = start(*settings, "progress=false", f"hydra.run.dir={directory}")
    wait_for(directory / "checkpoints", process, "latest_0000100.json")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr  # no handler before ours: exit 143
    interrupted = json.loads((directory / "summary.json").read_text())
    stopped = interrupted["steps"]
    assert interrupted["status"] == "interrupted" and 100 <= stopped < 1000, interrupted
    saved = checkpoint.checkpoint_path(directory, stopped, "latest")
    assert f"interrupted (SIGTERM) after {stopped} of 1000 steps; checkpoint {saved}" in interrupted["error"]
    assert f"[interrupted] {directory}" in stderr and "Traceback" not in stderr

    resumed = run_cli("bench", *settings, "progress=false", f"hydra.run.dir={directory}")
    assert resumed.returncode == 0, resumed.stderr
    assert f"continuing after step {stopped}" in resumed.stderr
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 1000
    assert summary["resumed_from"] == stopped and summary["resumes"] == 1 and summary["resumed_threads"] == 1
    assert (directory / "metrics.csv").read_bytes() == (tmp_path / "reference" / "metrics.csv").read_bytes()
    # The study checkpoints of both runs hold the same parameters.
    for step in (0, 700):
        ours, theirs = (
            json.loads(checkpoint.sidecar_path(checkpoint.checkpoint_path(folder, step)).read_text())
            for folder in (directory, tmp_path / "reference")
        )
        assert ours["params_digest"] == theirs["params_digest"]


def signal_when(path: Path, number: int, timeout: float = 60) -> threading.Thread:
    """Send ``number`` to this process as soon as ``path`` exists (from a helper thread)."""

    def wait_then_send() -> None:
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(os.getpid(), number)

    thread = threading.Thread(target=wait_then_send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("number", "preempt"), [(signal.SIGUSR1, None), (signal.SIGXCPU, "XCPU")])
def test_the_run_saves_and_records_before_the_previous_handler_gets_the_signal(
    number, preempt, tmp_path, one_thread, monkeypatch
):
    # submitit's handler for its preemption signal (SUBMITIT_PREEMPT_SIGNAL, USR2 by default) requeues the
    # job and exits from inside the handler: by then the checkpoint and the summary must be on disk.
    if preempt:
        monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", preempt)
    seen = []

    def previous(received: int, frame) -> None:
        summary = json.loads((tmp_path / "summary.json").read_text())
        latest = checkpoint.list_checkpoints(tmp_path, "latest")[-1]
        seen.append((received, summary["status"], checkpoint.load(latest)["step"], summary["steps"]))
        raise SystemExit(-1)  # as submitit's does after `scontrol requeue`

    before = signal.signal(number, previous)
    try:
        signal_when(tmp_path / "checkpoints" / "latest_0000050.json", number)
        config = make_config(*TOY, "steps=30000", "checkpoint.every=50")
        with pytest.raises(SystemExit):
            run(config, tmp_path)
        assert signal.getsignal(number) is previous  # put back once the run ended
    finally:
        signal.signal(number, before)
    [(received, status, saved_step, steps)] = seen
    assert received == number and status == "interrupted" and saved_step == steps >= 50
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert signal.Signals(number).name in summary["error"] and summary["steps"] < 30000


def test_a_previous_handler_that_returns_lets_the_run_go_on(tmp_path, one_thread):
    # submitit ignores SIGTERM (its handler only logs): the run saves and records itself, then trains on.
    calls = []

    def bypass(received: int, frame) -> None:
        calls.append(json.loads((tmp_path / "summary.json").read_text())["status"])

    before = signal.signal(signal.SIGTERM, bypass)
    try:
        signal_when(tmp_path / "checkpoints" / "latest_0000050.json", signal.SIGTERM)
        summary = run(make_config(*TOY, "steps=2000", "checkpoint.every=50"), tmp_path)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == ["interrupted"]
    assert summary["status"] == "ok" and summary["steps"] == 2000
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "ok"


def test_without_a_previous_python_handler_the_run_exits_with_128_plus_the_signal(tmp_path, one_thread):
    before = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        signal_when(tmp_path / "checkpoints" / "latest_0000050.json", signal.SIGUSR2)
        with pytest.raises(SystemExit) as stopped:
            run(make_config(*TOY, "steps=30000", "checkpoint.every=50"), tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert stopped.value.code == 128 + signal.SIGUSR2
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"


def test_stop_signals_a_second_signal_an_ignored_one_and_the_preemption_signal(monkeypatch):
    assert set(stop_signal_numbers({})) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT}
    assert signal.SIGXCPU in stop_signal_numbers({"SUBMITIT_PREEMPT_SIGNAL": "XCPU"})
    assert signal.SIGXCPU in stop_signal_numbers({"SUBMITIT_PREEMPT_SIGNAL": "SIGXCPU"})
    assert len(stop_signal_numbers({"SUBMITIT_PREEMPT_SIGNAL": "USR2"})) == 4

    signals = StopSignals([signal.SIGUSR1])
    signals.handle(signal.SIGUSR1, None)  # the first is acted on at the next step boundary
    assert signals.requested == signal.SIGUSR1
    with pytest.raises(Interrupted):  # a second one stops at once
        signals.handle(signal.SIGUSR1, None)

    before = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        ignoring = StopSignals([signal.SIGUSR1]).install()
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN  # an ignored signal stays ignored
        ignoring.restore()
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_threads_follow_a_slurm_allocation():
    assert allocation_threads({}) is None  # outside SLURM: torch's default (or the joblib launcher's share)
    assert allocation_threads({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "1"}) == 1
    assert allocation_threads({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "3"}) == 3
    assert allocation_threads({"SLURM_JOB_ID": "7"}) == available_cores()  # the affinity mask


def test_the_thread_count_a_run_resumes_with_is_recorded(tmp_path, one_thread):
    config = make_config(*TOY, "steps=40", "checkpoint.steps=[20]")
    run(config, tmp_path)
    (tmp_path / "summary.json").unlink()  # as if killed after step 20
    config = make_config(*TOY[:-1], "threads=2", "steps=40", "checkpoint.steps=[20]")
    summary = run(config, tmp_path)
    assert summary["resumed_from"] == 20 and summary["resumed_threads"] == 1 and summary["threads"] == 2
