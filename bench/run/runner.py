"""The training loop: train a task with an estimator and an optimizer, probe the gradient, write results.

``bench.run.build`` turns a config into the task, estimator and optimizer; this module runs them and writes
the run's files by the results contract (``bench.formats.contract``). It knows tasks only through
``bench.tasks.base.Task`` and estimators only through ``estimators.base.Estimator``.
"""

from __future__ import annotations

import cmath
import inspect
import math
import signal
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig
from tqdm import tqdm

from bench.formats.contract import (
    DIVERGED,
    FAILED,
    INTERRUPTED,
    METRICS_FILE,
    OK,
    REFERENCE_FIELDS,
    SUMMARY_FILE,
    empty_summary,
    steady_median,
)
from bench.formats.errors import ConfigError
from bench.formats.files import provenance, write_metrics, write_summary
from bench.run.build import check_settings, run_device, setup
from bench.run.checkpoint import Checkpoints, Interrupted, StopSignals, capture, restore
from bench.run.costs import PeakMemory, cuda_indices, deterministic_costs, device_name, synchronizer
from bench.run.probe import probe
from bench.run.sweep import config_digest, variant_digest
from bench.tasks.base import Task
from estimators.base import Estimator, EstimatorError, recording, variance_backward


class Diverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


@dataclass
class Recorder:
    """Collects the long-form metrics and writes them, atomically, as the run goes."""

    directory: Path
    rows: list[tuple[int, str, float]] = field(default_factory=list)
    completed_steps: int = 0  # training steps finished so far: what a failed or interrupted run reports

    def add(self, step: int, values: dict[str, float]) -> None:
        self.rows.extend((step, name, float(value)) for name, value in values.items())

    def flush(self) -> None:
        write_metrics(self.directory / METRICS_FILE, self.rows)


def finite_gradients(parameters: list[torch.Tensor]) -> bool:
    """Whether every entry of every gradient (a sparse gradient's stored values) is finite."""
    gradients = [
        p.grad._values() if p.grad.is_sparse else p.grad  # sparse: nn.Embedding(sparse=True)
        for p in parameters
        if p.grad is not None
    ]
    # Fast path (python -m bench.perf: ~20 µs per VAE step, against ~30 µs for fused norms and ~140 µs entry
    # by entry): one sum per tensor, added up as Python floats. A non-finite entry makes its tensor's sum
    # non-finite (inf − inf is nan), and so the total. A sum can also overflow for huge finite entries, so a
    # non-finite total is confirmed entry by entry. On a GPU the sums are added there and read once: one
    # synchronization instead of one per tensor.
    if gradients and gradients[0].device.type != "cpu":
        total = sum(gradient.sum() for gradient in gradients).item()
    else:
        total = sum([gradient.sum().item() for gradient in gradients])
    if cmath.isfinite(total):  # cmath: complex ones too
        return True
    return all(bool(torch.isfinite(gradient).all()) for gradient in gradients)


def probe_steps(steps: int, every: int) -> set[int]:
    return set(range(0, steps + 1, every)) | {steps} if every else {steps}


def batch_source(task: Task, generator: torch.Generator):
    """``step -> batch``: the task's ``train_batch``, given the run's seeded data generator if it takes one.

    Every built-in task draws its data order from that generator alone, so runs of one seed train on the
    same data whatever their estimator consumes from the global generator. A task of your own written
    with the older one-argument ``train_batch(step)`` keeps working.
    """
    try:
        takes_generator = len(inspect.signature(task.train_batch).parameters) >= 2
    except (TypeError, ValueError):  # a builtin or C function: call it the old way
        takes_generator = False
    if takes_generator:
        return lambda step: task.train_batch(step, generator)
    return task.train_batch


def evaluation_weights(optimizer: Any):
    """Where the objective is evaluated: at Lookahead's slow weights (what it converges to, and what Zhang
    et al. 2019 report), else at the parameters as they are. Gradient probes stay at the fast weights,
    which are what the inner optimizer consumes."""
    slow_weights = getattr(optimizer, "slow_weights", None)
    return slow_weights() if callable(slow_weights) else nullcontext()


def train(
    config: DictConfig,
    task: Task,
    estimator: Estimator,
    optimizer,
    recorder: Recorder,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """The training loop with probes; returns the summary fields it measured.

    With ``checkpoints``: it continues from ``checkpoints.resumed`` when there is one (the step after it,
    bit-identical to the uninterrupted run on CPU), and hands ``checkpoints.after_step`` the state at the end
    of every step (step 0: after its probe), which saves what is due and stops the run on a signal.

    An estimator with parameters of its own (``Estimator.own_parameters``: REBAR's η and λ, RELAX's network)
    gets an optimizer of its own (``estimator.make_optimizer()``, built after the first training estimate so
    that it sees a network sized at that call), which steps on the variance objective
    (``estimators.base.variance_backward``) after the task's optimizer steps, at every training step; the
    task's optimizer never sees these parameters, and probes measure the estimator as it is, without updating
    it. Plain estimators train with ``loss.backward()`` alone.
    """
    parameters = list(task.parameters())
    planned = probe_steps(config.steps, config.probe.every)
    step_times: list[float] = []
    optimizer_times: list[float] = []
    estimate_times: list[float] = []  # forward and backward of the training loss: one gradient estimate
    last_probe: dict[str, float] = {}
    running_loss, running_count = 0.0, 0
    # Read once: an OmegaConf attribute costs ~17 µs, ~1% of a VAE step when read every step
    # (bench.campaigns.perf).
    samples, log_every = config.samples, config.log_every
    vectorize, wrt = config.probe.get("vectorize", "auto"), config.probe.get("wrt", "parameters")
    device = run_device(config)
    data = torch.Generator(device=device).manual_seed(config.seed)  # the run's data generator, on its device
    synchronize, forked = synchronizer(device), cuda_indices(task)
    next_batch = batch_source(task, data)
    trains_own = bool(estimator.own_parameters())
    own_optimizer: torch.optim.Optimizer | None = None  # the estimator's own parameters' (see above)

    def evaluate() -> dict[str, float]:
        with evaluation_weights(optimizer):
            return task.evaluate()

    def do_probe(step: int) -> None:
        nonlocal last_probe
        evaluation = evaluate()
        objective = evaluation.get("objective")
        # Probing diverged parameters is meaningless: the run ends here.
        if objective is not None and not math.isfinite(objective):
            recorder.add(step, evaluation)
            raise Diverged(f"the objective became non-finite ({objective}) at step {step}", step)
        # Probes draw from their own seeded stream, so probing more or less often does not change training.
        with torch.random.fork_rng(devices=forked):  # the CPU's generator and the run's GPU's
            torch.manual_seed(config.seed * 1_000_003 + step)
            last_probe = probe(task, estimator, samples, config.probe.draws, vectorize, wrt)
        # Wall times go to summary.json only: metrics.csv holds what the seed determines, so that it is
        # bit-for-bit reproducible.
        # The Monte-Carlo reference's description (REFERENCE_FIELDS) goes to summary.json only, as well.
        measured = {
            name: value
            for name, value in last_probe.items()
            if not name.endswith("_time_ms") and name not in REFERENCE_FIELDS
        }
        recorder.add(step, {**evaluation, **measured})
        recorder.flush()

    def state() -> dict[str, Any]:  # everything the next step depends on (bench.run.checkpoint)
        return {
            **capture(task, estimator, optimizer, data, own_optimizer),
            "step": step,
            "rows": list(recorder.rows),
            "timing": {"step": step_times, "optimizer": optimizer_times, "estimate": estimate_times},
            "running": {"loss": running_loss, "count": running_count},
            "probe": last_probe,
        }

    costs = deterministic_costs(task, estimator, samples)
    step = 0
    resumed = checkpoints.resumed if checkpoints is not None else None
    if resumed is not None:
        own_optimizer = restore(resumed, task, estimator, optimizer, data)
        step = recorder.completed_steps = resumed["step"]
        recorder.rows[:] = resumed["rows"]
        step_times[:], optimizer_times[:] = resumed["timing"]["step"], resumed["timing"]["optimizer"]
        estimate_times[:] = resumed["timing"]["estimate"]
        running_loss, running_count = resumed["running"]["loss"], resumed["running"]["count"]
        last_probe = resumed["probe"]
    else:
        if 0 in planned:
            do_probe(0)
        if checkpoints is not None:
            checkpoints.after_step(0, state)
    # Created after the first probe, so that its rate and time estimate are those of training steps.
    progress = tqdm(
        range(step + 1, config.steps + 1),
        initial=step,
        total=config.steps,
        desc=f"{config.task.name}/{config.estimator.name}",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    show_progress, clock = not progress.disable, time.perf_counter
    for step in progress:
        started = clock()
        scheduled = estimator.on_step(step) or {}  # e.g. the temperature, when a schedule moved it
        if scheduled:
            recorder.add(step, scheduled)
        batch = next_batch(step)
        synchronize()  # on a GPU, the clock is read when the queued work is done (no-op on the CPU)
        estimate_started = clock()
        if trains_own:
            with recording(estimator) as calls:  # the distribution parameters of each estimator call
                loss = task.loss(estimator, samples, batch)
            optimizer.zero_grad(set_to_none=True)
            if own_optimizer is None:
                own_optimizer = estimator.make_optimizer()
            own_optimizer.zero_grad(set_to_none=True)
            variance_backward(loss, calls, estimator)
        else:
            loss = task.loss(estimator, samples, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        synchronize()
        estimate_times.append(clock() - estimate_started)
        value = loss.item()
        if not (math.isfinite(value) and finite_gradients(parameters)):
            raise Diverged(f"the loss or a gradient became non-finite (loss={value}) at step {step}", step)
        optimizer_started = clock()
        try:
            optimizer.step()
        except (RuntimeError, ValueError) as error:
            if step > 1:
                raise
            # An optimizer that refuses the task's gradients at once (SparseAdam given dense gradients, Adam
            # given sparse ones) is a configuration mistake, not a failed run.
            raise ConfigError(
                f"optimizer '{config.optimizer.name}' cannot train task '{config.task.name}' as configured; "
                f"at its first step it said: {error}. Check the task's settings (e.g. whether its gradients "
                f"are sparse: task.sparse) against the optimizer."
            ) from None
        if own_optimizer is not None:  # the estimator's own parameters (timed with the optimizer's step)
            own_optimizer.step()
        synchronize()
        finished = clock()
        step_times.append(finished - started)
        optimizer_times.append(finished - optimizer_started)
        recorder.completed_steps = step
        extra = task.after_step(step, batch)
        running_loss, running_count = running_loss + value, running_count + 1
        if step % log_every == 0:
            recorder.add(step, {"train_loss": running_loss / running_count, **extra})
            if show_progress:
                progress.set_postfix(loss=f"{running_loss / running_count:.4g}", refresh=False)
            running_loss, running_count = 0.0, 0
        if step in planned:
            do_probe(step)
        if checkpoints is not None:
            checkpoints.after_step(step, state)
    progress.close()
    return {
        "steps": step,
        "step_time_ms": milliseconds(steady_median(step_times)),
        "optimizer_time_ms": milliseconds(steady_median(optimizer_times)),
        "estimate_time_ms": milliseconds(steady_median(estimate_times)),
        "costs": costs,
        "probe": last_probe,
        "final": evaluate(),
    }


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


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
    started = time.perf_counter()
    recorder = Recorder(directory)
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
