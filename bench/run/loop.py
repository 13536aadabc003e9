"""The training loop: train a task with an estimator and an optimizer, probe the gradient along the way.

``train`` holds its state in one ``bench.run.state.TrainingState`` (what a checkpoint saves and a resume
restores); ``Recorder`` collects the long-form metrics and writes ``metrics.csv`` atomically as the run goes.
It knows tasks only through ``bench.tasks.base.Task`` and estimators only through
``estimators.base.Estimator``.
"""

from __future__ import annotations

import cmath
import inspect
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from bench.formats.contract import METRICS_FILE, REFERENCE_FIELDS, steady_median
from bench.formats.errors import ConfigError
from bench.formats.files import write_metrics
from bench.run.build import make_scheduler
from bench.run.checkpoint import Checkpoints
from bench.run.costs import deterministic_costs
from bench.run.device import cuda_indices, run_device, synchronizer
from bench.run.probe import probe
from bench.run.state import TrainingState
from bench.tasks.base import Task
from estimators.base import Estimator, recording, variance_backward
from optim.evaluation import evaluation_weights as optimizer_evaluation_weights


class Diverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


@dataclass
class Recorder:
    """Collects the long-form metrics and writes them, atomically, as the run goes."""

    directory: Path
    rows: list[tuple[int, str, float]] = field(default_factory=list)
    completed_steps: int = 0  # training steps finished so far: what a failed or interrupted run reports
    tracker: Any = None  # bench.run.tracking (logger=tensorboard|mlflow): gets the rows as they are written
    sent: int = 0  # rows the tracker has

    def add(self, step: int, values: dict[str, float]) -> None:
        self.rows.extend((step, name, float(value)) for name, value in values.items())

    def flush(self) -> None:
        write_metrics(self.directory / METRICS_FILE, self.rows)
        if self.tracker is not None and self.sent < len(self.rows):
            self.tracker.log_rows(self.rows[self.sent :])
            self.sent = len(self.rows)


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
    """Where the objective is evaluated (``optim.evaluation``): at Lookahead's slow weights (what it
    converges to, and what Zhang et al. 2019 report), at Schedule-Free's average (what Defazio et al. 2024
    evaluate), at Schedule-Free's average of Lookahead's slow weights when Lookahead wraps Schedule-Free;
    else at the parameters as they are. Gradient probes and training steps stay at the weights the
    optimizer computes its gradient at (the fast weights, Schedule-Free's interpolation), and checkpoints
    hold those."""
    return optimizer_evaluation_weights(optimizer)


def train(
    config: DictConfig,
    task: Task,
    estimator: Estimator,
    optimizer,
    recorder: Recorder,
    checkpoints: Checkpoints | None = None,
    measure: bool = True,
) -> dict[str, Any]:
    """The training loop with probes; returns the summary fields it measured.

    Its state is one ``bench.run.state.TrainingState``. With ``checkpoints``: it continues from
    ``checkpoints.resumed`` when there is one (the step after it, bit-identical to the uninterrupted run on
    CPU), and hands ``checkpoints.after_step`` the state's ``capture`` at the end of every step (step 0:
    after its probe), which saves what is due and stops the run on a signal.

    An estimator with parameters of its own (``Estimator.own_parameters``: REBAR's η and λ, RELAX's network)
    gets an optimizer of its own (``estimator.make_optimizer()``, built after the first training estimate so
    that it sees a network sized at that call), which steps on the variance objective
    (``estimators.base.variance_backward``) after the task's optimizer steps, at every training step; the
    task's optimizer never sees these parameters, and probes measure the estimator as it is, without updating
    it. Plain estimators train with ``loss.backward()`` alone.

    ``measure=False`` trains and evaluates only: no probe and no count of the costs (a screening run, e.g.
    the first stage of ``python -m bench.recommend``); the metrics recorded are the training loss's.
    """
    parameters = list(task.parameters())
    planned = probe_steps(config.steps, config.probe.every)
    # Read once: an OmegaConf attribute costs ~17 µs, ~1% of a VAE step when read every step (bench.perf).
    samples, log_every = config.samples, config.log_every
    vectorize, wrt = config.probe.get("vectorize", "auto"), config.probe.get("wrt", "parameters")
    device = run_device(config)
    data = torch.Generator(device=device).manual_seed(config.seed)  # the run's data generator, on its device
    synchronize, forked = synchronizer(device), cuda_indices(task)
    next_batch = batch_source(task, data)
    trains_own = bool(estimator.own_parameters())
    state = TrainingState(task, estimator, optimizer, data, rows=recorder.rows)
    state.scheduler = make_scheduler(config, optimizer)  # None for a constant learning rate

    def evaluate() -> dict[str, float]:
        with evaluation_weights(optimizer):
            return task.evaluate()

    def do_probe(step: int) -> None:
        evaluation = evaluate()
        objective = evaluation.get("objective")
        # Probing diverged parameters is meaningless: the run ends here.
        if objective is not None and not math.isfinite(objective):
            recorder.add(step, evaluation)
            raise Diverged(f"the objective became non-finite ({objective}) at step {step}", step)
        # Probes draw from their own seeded stream, so probing more or less often does not change training.
        with torch.random.fork_rng(devices=forked):  # the CPU's generator and the run's GPU's
            torch.manual_seed(config.seed * 1_000_003 + step)
            state.last_probe = probe(task, estimator, samples, config.probe.draws, vectorize, wrt)
        # Wall times go to summary.json only: metrics.csv holds what the seed determines, so that it is
        # bit-for-bit reproducible.
        # The Monte-Carlo reference's description (REFERENCE_FIELDS) goes to summary.json only, as well.
        measured = {
            name: value
            for name, value in state.last_probe.items()
            if not name.endswith("_time_ms") and name not in REFERENCE_FIELDS
        }
        recorder.add(step, {**evaluation, **measured})
        recorder.flush()

    costs = deterministic_costs(task, estimator, samples) if measure else {}
    if not measure:
        planned = set()
    resumed = checkpoints.resumed if checkpoints is not None else None
    if resumed is not None:
        state.restore(resumed)
        recorder.completed_steps = state.step
    else:
        if 0 in planned:
            do_probe(0)
        if checkpoints is not None:
            checkpoints.after_step(0, state.capture)
    # Created after the first probe, so that its rate and time estimate are those of training steps.
    progress = tqdm(
        range(state.step + 1, config.steps + 1),
        initial=state.step,
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
            if state.estimator_optimizer is None:
                state.estimator_optimizer = estimator.make_optimizer()
            state.estimator_optimizer.zero_grad(set_to_none=True)
            variance_backward(loss, calls, estimator)
        else:
            loss = task.loss(estimator, samples, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        synchronize()
        state.estimate_times.append(clock() - estimate_started)
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
        if state.scheduler is not None:  # the learning rate of the next step (timed with the optimizer)
            state.scheduler.step()
        if state.estimator_optimizer is not None:  # the estimator's own parameters (timed with the step)
            state.estimator_optimizer.step()
        synchronize()
        finished = clock()
        state.step_times.append(finished - started)
        state.optimizer_times.append(finished - optimizer_started)
        state.step = recorder.completed_steps = step
        extra = task.after_step(step, batch)
        state.running_loss, state.running_count = state.running_loss + value, state.running_count + 1
        if step % log_every == 0:
            mean = state.running_loss / state.running_count
            recorder.add(step, {"train_loss": mean, **extra})
            if show_progress:
                progress.set_postfix(loss=f"{mean:.4g}", refresh=False)
            state.running_loss, state.running_count = 0.0, 0
        if step in planned:
            do_probe(step)
        if checkpoints is not None:
            checkpoints.after_step(step, state.capture)
    progress.close()
    return {
        "steps": state.step,
        "step_time_ms": milliseconds(steady_median(state.step_times)),
        "optimizer_time_ms": milliseconds(steady_median(state.optimizer_times)),
        "estimate_time_ms": milliseconds(steady_median(state.estimate_times)),
        "costs": costs,
        "probe": state.last_probe,
        "final": evaluate(),
    }


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds
