"""One run: a config in, a run folder out (``summary.json``, ``metrics.csv``, checkpoints).

``bench.run.build`` turns a config into the task, estimator and optimizer; ``bench.run.loop.train`` trains
them; this module handles everything around: the summary by the results contract (``bench.formats.contract``),
resuming from checkpoints, stop signals, failures, and a short description for the terminal.
"""

from __future__ import annotations

import errno
import math
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from bench.formats.contract import (
    DIVERGED,
    FAILED,
    INTERRUPTED,
    OK,
    SUMMARY_FILE,
    empty_summary,
)
from bench.formats.errors import ConfigError
from bench.formats.files import write_summary
from bench.formats.version import provenance
from bench.run.build import check_settings, optimizer_record, setup
from bench.run.checkpoint import Checkpoints, list_checkpoints
from bench.run.device import PeakMemory, device_name, run_device
from bench.run.folders import check_folder
from bench.run.loop import Diverged, Recorder, train
from bench.run.signals import Interrupted, StopSignals
from bench.run.sweep import config_digest, variant_digest
from bench.run.tracking import tracker_for
from bench.tasks.base import Task
from estimators.base import EstimatorError

StudyHook = Callable[[DictConfig, Task, Path, str, StopSignals], dict[str, Any]]
"""What a same-point study does after its trajectory trained (``bench.campaigns.same_point.run_study``):
given the config, the trained task, the run folder, the config digest and the stop signals, it probes and
returns the study's summary fields. The run layer does not know studies; the command line hands it over."""


def run(config: DictConfig, directory: Path, study: StudyHook | None = None) -> dict[str, Any]:
    """Run one configuration into ``directory``; returns the summary (also written as ``summary.json``).

    ``study``: for a config with a ``study`` node, what probes the checkpoints after training
    (``bench.campaigns.same_point.run_study``; ``bench.campaigns.same_point.run`` passes it).

    ConfigError and KeyboardInterrupt are re-raised after the summary is written, so the caller can
    report them; a diverged or failed run is recorded and returned. A stop signal (``bench.run.checkpoint``:
    SIGTERM, SIGUSR1, SIGUSR2, SIGINT, submitit's preemption signal) is acted on at the next step boundary:
    a checkpoint, the summary with the status ``interrupted``, then the handler installed before ours
    (submitit's requeues the job; Python's SIGINT handler raises KeyboardInterrupt; one that returns lets
    the run go on), or, without one, exit with 128 + the signal's number. The run continues from its
    newest good checkpoint when ``directory`` holds one (``resume``).
    """
    directory = Path(directory)
    # Another configuration's run (ok, or its checkpoints) is never overwritten without force=true; nothing
    # is written before this (bench.run.folders).
    check_folder(directory, config_digest(config), bool(config.get("force")))
    started = time.perf_counter()
    recorder = Recorder(directory, tracker=tracker_for(config, directory))  # logger=tensorboard|mlflow
    summary = empty_summary()
    summary.update(
        task=config.task.name,
        estimator=config.estimator.name,
        optimizer=config.optimizer.name,
        seed=config.seed,
        status=OK,
        kind="study" if config.get("study") is not None else "train",
        steps=0,
        wall_time_s=0.0,
        reference=getattr(get_object(config.task._target_), "reference", "none")
        if "_target_" in config.task
        else "none",
        samples=config.samples,
        probe_draws=config.probe.draws,
        config_digest=config_digest(config),
        variant_digest=variant_digest(config),
        **provenance(),
    )
    summary.update(threads=torch.get_num_threads(), resumed_from=None, resumes=0)
    summary["device"] = str(config.get("device", "auto"))  # as requested, until it is resolved
    memory: PeakMemory | None = None
    pending: BaseException | None = None
    signals = StopSignals().install()  # a stop signal ends the run at a step boundary, after a checkpoint

    def record_stop(stop: Interrupted) -> None:  # before the handler that was there before ours (it may exit)
        interim = {**summary, "status": "interrupted", "steps": stop.step}
        interim.update(error=stopped(stop, config.steps), wall_time_s=time.perf_counter() - started)
        recorder.flush()
        write_summary(directory / SUMMARY_FILE, interim)

    signals.on_stop = record_stop
    try:
        check_settings(config)  # before the seed and the threads are used (setup checks again, harmlessly)
        device = run_device(config)
        summary.update(device=str(device), device_name=device_name(device))
        memory = PeakMemory(device).start()  # this run's peak alone, also when runs share a process
        torch.manual_seed(config.seed)
        if config.get("threads"):
            torch.set_num_threads(int(config.threads))
            summary["threads"] = torch.get_num_threads()
        checkpoints = Checkpoints(
            directory, config, summary["config_digest"], force=bool(config.get("force")), signals=signals
        )
        resumed = checkpoints.choose()
        if checkpoints.refused:
            summary["resume_refused"] = " ".join(checkpoints.refused)
        if resumed is not None:
            summary.update(
                resumed_from=resumed["step"], resumes=checkpoints.resumes, resumed_threads=resumed["threads"]
            )
            print(f"[resume] {directory}: continuing after step {resumed['step']}", file=sys.stderr)
            if resumed["threads"] != summary["threads"]:
                print(
                    f"[resume] {directory}: the checkpoint was written with threads={resumed['threads']}, "
                    f"this run uses {summary['threads']}: its numbers may differ in the last bits from an "
                    f"uninterrupted run's",
                    file=sys.stderr,
                )
        task, estimator, optimizer = setup(config)
        summary.update(reference=task.reference, samples=int(config.samples))
        summary.update(optimizer_record(config, optimizer))  # schedule, warmup_steps (, optimizer_split)
        if task.best_known_objective is not None:
            summary["best_known_objective"] = float(task.best_known_objective)
        if isinstance(getattr(task, "data_name", None), str):  # the data set, by its own name (digits28)
            summary["data"] = task.data_name
        measured = train(config, task, estimator, optimizer, recorder, checkpoints)
        summary.update(
            steps=measured["steps"],
            step_time_ms=measured["step_time_ms"],
            optimizer_time_ms=measured["optimizer_time_ms"],
            estimate_time_ms=measured["estimate_time_ms"],
            **measured["costs"],
        )
        summary.update(final_loss=measured["final"].get("objective"), **measured["probe"])
        if summary["kind"] == "study":  # every estimator probed at the checkpoints (bench.campaigns)
            if study is None:
                raise ConfigError(
                    "this config has a study node (a same-point gradient study), which runs through python "
                    "-m bench or bench.campaigns.same_point.run(config, directory), not bench.run.runner.run "
                    "alone."
                )
            summary.update(study(config, task, directory, summary["config_digest"], signals))
    except ConfigError as error:
        summary.update(status=error.status, error=str(error))
        pending = error
    except EstimatorError as error:  # an estimator refusing the task's input (disarm given 3 classes)
        summary.update(status=FAILED, error=str(error))
        pending = ConfigError(str(error))
    except Diverged as error:
        summary.update(
            status=DIVERGED,
            error=str(error.args[0]),
            steps=recorder.completed_steps,  # steps finished: a step that diverged did not finish
            diverged_step=error.args[1],
        )
    except Interrupted as error:
        if error.step is None:  # a second signal, which stops at once
            error.step = recorder.completed_steps
        summary.update(status=INTERRUPTED, steps=error.step, error=stopped(error, config.steps))
        pending = error
    except KeyboardInterrupt as error:  # Ctrl-C, handed to Python's handler after a checkpoint (or not ours)
        stop = signals.stopped or Interrupted(signal.SIGINT, recorder.completed_steps)
        summary.update(status=INTERRUPTED, steps=stop.step, error=stopped(stop, config.steps))
        pending = error
    except Exception as error:  # noqa: BLE001 - a sweep must go on past a failing run
        stop = signals.stopped
        if stop is not None and stop.raised is error:  # the handler before ours raised it (submitit's, when
            # it does not requeue the job): the run stays interrupted, and the error goes on to the caller
            summary.update(status=INTERRUPTED, steps=stop.step, error=stopped(stop, config.steps))
            pending = error
        elif disk_full(error):  # the environment, not the run: exit 2 saying so; re-running resumes
            message = (
                f"the disk is full ({error}) after step {recorder.completed_steps}: free space where the "
                f"results go, then re-run the same command into {directory}"
                + (", which resumes from its last checkpoint" if list_checkpoints(directory) else "")
            )
            summary.update(status=FAILED, steps=recorder.completed_steps, error=message)
            pending = ConfigError(message)
        else:
            summary.update(
                status=FAILED, steps=recorder.completed_steps, error=f"{type(error).__name__}: {error}"
            )
            (directory / "error.log").write_text(traceback.format_exc())
    summary["wall_time_s"] = time.perf_counter() - started
    summary["peak_memory_mb"] = memory.megabytes() if memory is not None else None
    try:
        if recorder.rows:
            recorder.flush()
        write_summary(directory / SUMMARY_FILE, summary)
        if recorder.tracker is not None:  # the summary, as run parameters and final metrics
            recorder.tracker.finish(summary, OmegaConf.to_container(config, resolve=True))
    finally:
        signals.restore()
    if isinstance(pending, Interrupted) or signals.requested is not None:
        # What the signal would have done: submitit's handler requeues the job; without one, exit 128 + n.
        if isinstance(pending, Interrupted):
            number, message = pending.signal_number, summary["error"]
        else:
            number, message = signals.requested, "a stop signal came after the last step; the run is recorded"
        print(f"[interrupted] {directory}: {message}", file=sys.stderr)
        signals.hand_over(number)
        if isinstance(pending, Interrupted):
            return summary
    if pending is not None:
        raise pending
    return summary


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that found no space left (the disk, or the user's quota)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def stopped(stop: Interrupted, steps: int) -> str:
    """The ``error`` of a run that a signal stopped: which, when, and where its checkpoint is."""
    saved = f"; checkpoint {stop.checkpoint}" if stop.checkpoint else "; no checkpoint of this attempt"
    return (
        f"interrupted ({stop.name}) after {stop.step} of {steps} steps{saved}; re-running the same "
        f"configuration into this folder resumes it"
    )


def describe(summary: dict[str, Any], directory: Path) -> str:
    """A short human summary of a finished run."""

    def number(key: str, spec: str = ".4g") -> str:
        value = summary.get(key)
        return (
            "n/a"
            if value is None or (isinstance(value, float) and not math.isfinite(value))
            else format(value, spec)
        )

    lines = [
        f"{summary['task']} / {summary['estimator']} / {summary['optimizer']}  seed={summary['seed']}  "
        f"status={summary['status']}",
    ]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    if summary["status"] == OK:
        if summary["reference"] == "none":
            bias = "no reference gradient, so no bias"
        else:
            p_value = summary.get("grad_bias_p")
            test = (
                "no test (the draws do not vary)"
                if p_value is None
                else f"test of zero bias p = {p_value:.3g}"
            )
            bias = (
                f"squared bias {number('grad_bias_sq')} ({number('grad_bias_rel', '.3g')} × ‖g*‖²; {test}; "
                f"reference: {summary['reference']}), cosine {number('grad_cos', '.3f')}"
            )
        lines += [
            f"  final objective {number('final_loss')}   after {summary['steps']} steps, "
            f"{number('wall_time_s', '.1f')} s ({number('step_time_ms', '.3g')} ms/step, "
            f"{number('estimate_time_ms', '.3g')} ms per gradient estimate, {number('f_evals')} evaluations "
            f"of f)",
            f"  gradient at the end (M={summary['probe_draws']} draws, S={summary['samples']}): "
            f"variance {number('grad_variance')} ({number('grad_variance_rel', '.3g')} × ‖g*‖²), {bias}",
        ]
    lines.append(f"  results in {directory}")
    return "\n".join(lines)
