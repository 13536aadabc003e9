"""The runner: build a task, an estimator and an optimizer from a config, train, probe, write results.

It knows tasks only through ``bench.tasks.base.Task`` and estimators only through
``estimators.base.Estimator``; names come from the configs (``name`` key) and classes from ``_target_``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench.errors import ConfigError
from bench.probe import PROBE_FIELDS, check_vectorize, probe
from bench.results import provenance, write_metrics, write_summary
from bench.sweep import config_digest, variant_digest
from bench.tasks.base import Task
from bench.tasks.custom import check_task
from estimators.base import Estimator, EstimatorError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class Diverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


def unwrap(error: BaseException) -> BaseException:
    """Hydra wraps errors raised while instantiating; find the one we raised ourselves."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def drop_names(node: Any) -> Any:
    """Remove the ``name`` key from every node that has a ``_target_``, nested ones included.

    Configs name themselves (``name:``), constructors do not take it; a nested node is, e.g., the inner
    optimizer of ``optimizer=lookahead``.
    """
    if isinstance(node, dict):
        named = "_target_" in node
        return {key: drop_names(value) for key, value in node.items() if not (named and key == "name")}
    if isinstance(node, list):
        return [drop_names(value) for value in node]
    return node


def build(config: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a config group node, dropping its ``name`` keys; config errors come out as ConfigError."""
    node = drop_names(OmegaConf.to_container(config, resolve=True))
    node.pop("name", None)
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, EstimatorError, ConfigError, TypeError, ValueError) as error:
        cause = unwrap(error)
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{config.get('name', node.get('_target_'))}: {cause}") from None


def estimator_class(config: DictConfig) -> type[Estimator]:
    return get_class(config._target_)


def config_target(path: Path) -> str | None:
    """The ``_target_`` of a group config file, following presets that extend another file of the group."""
    node = OmegaConf.load(path)
    if "_target_" in node:
        return node._target_
    for parent in node.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_" and (path.parent / f"{parent}.yaml").exists():
            return config_target(path.parent / f"{parent}.yaml")
    return None


def estimators_for(latent: str) -> list[str]:
    """Names of the estimator configs whose estimator supports the latent kind ``latent``."""
    names = []
    for path in sorted((CONF_DIR / "estimator").glob("*.yaml")):
        try:
            if latent in get_class(config_target(path)).latents:
                names.append(path.stem)
        except Exception:  # noqa: BLE001 - a broken config must not hide the others
            continue
    return names


def learning_rates(node: Any, prefix: str) -> list[tuple[str, Any]]:
    """Every ``lr`` in an optimizer config, nested ones included (the inner optimizer of lookahead)."""
    found = []
    for key, value in node.items():
        if key == "lr" and value is not None:
            found.append((f"{prefix}.lr", value))
        elif isinstance(value, DictConfig):
            found.extend(learning_rates(value, f"{prefix}.{key}"))
    return found


def check_settings(config: DictConfig) -> None:
    """Type and range checks on the top-level settings, each failing with a message that names the key."""
    optional = ("samples", "threads")
    for key in ("seed", "steps", "samples", "log_every", "probe.every", "probe.draws", "threads"):
        value = OmegaConf.select(config, key)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole and not (value is None and key in optional):
            raise ConfigError(f"{key} must be a whole number, got {key}={value!r}.")
    for key, value in learning_rates(config.optimizer, "optimizer"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ConfigError(f"{key} must be a number > 0, got {key}={value!r}.")
    checks = [
        (config.steps >= 1, f"steps must be >= 1, got steps={config.steps}."),
        (
            config.samples is None or config.samples >= 1,
            f"samples must be >= 1, got samples={config.samples}.",
        ),
        (
            config.probe.draws >= 2,
            f"probe.draws must be >= 2 (a variance needs two draws), got {config.probe.draws}.",
        ),
        (
            config.probe.every >= 0,
            f"probe.every must be >= 0 (0: probe only at the end), got {config.probe.every}.",
        ),
        (config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}."),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def setup(config: DictConfig) -> tuple[Task, Estimator, torch.optim.Optimizer]:
    check_settings(config)
    task_target, estimator_cls = get_object(config.task._target_), estimator_class(config.estimator)
    # A Task class declares its latent kind before it is built (nothing expensive is built for a mismatch); a
    # factory function (task=custom, bench/tasks/custom.py) builds the task first and is checked.
    where = f"task._target_={config.task._target_!r}"
    task = None if isinstance(task_target, type) else check_task(build(config.task), where)
    latent = task_target.latent if task is None else task.latent
    if latent not in estimator_cls.latents:
        fitting = estimators_for(latent)
        raise ConfigError(
            f"Estimator '{config.estimator.name}' does not fit task '{config.task.name}': the task's latent "
            f"variables are {latent}, the estimator supports {', '.join(estimator_cls.latents)}. "
            f"Estimators that fit {config.task.name}: {', '.join(fitting) or 'none'}.",
            status="skipped",
        )
    task = build(config.task) if task is None else task
    estimator = build(config.estimator)
    if config.samples is None:  # each estimator's smallest sample count: 1, or 2 for a leave-one-out baseline
        config.samples = estimator.min_samples
    try:
        estimator.check_samples(config.samples)
    except EstimatorError as error:
        raise ConfigError(f"estimator '{config.estimator.name}': {error}") from None
    check_vectorize(config.probe.get("vectorize", "auto"), task, estimator)
    optimizer = build(config.optimizer, params=list(task.parameters()))
    return task, estimator, optimizer


@dataclass
class Recorder:
    """Collects the long-form metrics and writes them, atomically, as the run goes."""

    directory: Path
    rows: list[tuple[int, str, float]] = field(default_factory=list)
    completed_steps: int = 0  # training steps finished so far: what a failed or interrupted run reports

    def add(self, step: int, values: dict[str, float]) -> None:
        self.rows.extend((step, name, float(value)) for name, value in values.items())

    def flush(self) -> None:
        write_metrics(self.directory / "metrics.csv", self.rows)


def finite_gradients(parameters: list[torch.Tensor]) -> bool:
    def values(
        grad: torch.Tensor,
    ) -> torch.Tensor:  # a sparse gradient (nn.Embedding(sparse=True)): its entries
        return grad._values() if grad.is_sparse else grad

    gradients = [values(p.grad) for p in parameters if p.grad is not None]
    if not gradients:
        return True
    # Fast path (python -m bench.perf: ~40 µs instead of ~140 µs per VAE step): one fused norm per tensor; a
    # non-finite entry makes its norm non-finite. A norm can also overflow for huge finite entries, so a
    # non-finite norm is confirmed entry by entry.
    if bool(torch.stack(torch._foreach_norm(gradients)).isfinite().all()):
        return True
    return all(bool(torch.isfinite(gradient).all()) for gradient in gradients)


def probe_steps(steps: int, every: int) -> set[int]:
    return set(range(0, steps + 1, every)) | {steps} if every else {steps}


def train(
    config: DictConfig, task: Task, estimator: Estimator, optimizer, recorder: Recorder
) -> dict[str, Any]:
    """The training loop with probes; returns the summary fields it measured."""
    parameters = list(task.parameters())
    planned = probe_steps(config.steps, config.probe.every)
    step_times: list[float] = []
    optimizer_times: list[float] = []
    last_probe: dict[str, float] = {}
    running_loss, running_count = 0.0, 0
    # Read once: an OmegaConf attribute costs ~17 µs, ~1% of a VAE step when read every step (bench.perf).
    samples, log_every = config.samples, config.log_every

    def do_probe(step: int) -> None:
        nonlocal last_probe
        evaluation = task.evaluate()
        objective = evaluation.get("objective")
        # Probing diverged parameters is meaningless: the run ends here.
        if objective is not None and not math.isfinite(objective):
            recorder.add(step, evaluation)
            raise Diverged(f"the objective became non-finite ({objective}) at step {step}", step)
        # Probes draw from their own seeded stream, so probing more or less often does not change training.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed * 1_000_003 + step)
            last_probe = probe(
                task, estimator, config.samples, config.probe.draws, config.probe.get("vectorize", "auto")
            )
        # Wall times go to summary.json only: metrics.csv holds what the seed determines, so that it is
        # bit-for-bit reproducible.
        measured = {name: value for name, value in last_probe.items() if not name.endswith("_time_ms")}
        recorder.add(step, {**evaluation, **measured})
        recorder.flush()

    step = 0
    if 0 in planned:
        do_probe(0)
    # Created after the first probe, so that its rate and time estimate are those of training steps.
    progress = tqdm(
        range(1, config.steps + 1),
        desc=f"{config.task.name}/{config.estimator.name}",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for step in progress:
        started = time.perf_counter()
        scheduled = estimator.on_step(step) or {}  # e.g. the temperature, when a schedule moved it
        if scheduled:
            recorder.add(step, scheduled)
        batch = task.train_batch(step)
        loss = task.loss(estimator, samples, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not (math.isfinite(value) and finite_gradients(parameters)):
            raise Diverged(f"the loss or a gradient became non-finite (loss={value}) at step {step}", step)
        optimizer_started = time.perf_counter()
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
        finished = time.perf_counter()
        step_times.append(finished - started)
        optimizer_times.append(finished - optimizer_started)
        recorder.completed_steps = step
        extra = task.after_step(step, batch)
        running_loss, running_count = running_loss + value, running_count + 1
        if step % log_every == 0:
            recorder.add(step, {"train_loss": running_loss / running_count, **extra})
            progress.set_postfix(loss=f"{running_loss / running_count:.4g}", refresh=False)
            running_loss, running_count = 0.0, 0
        if step in planned:
            do_probe(step)
    progress.close()
    warmup = min(5, len(step_times) // 10)
    return {
        "steps": step,
        "step_time_ms": 1000 * statistics.median(step_times[warmup:]) if step_times else None,
        "optimizer_time_ms": 1000 * statistics.median(optimizer_times[warmup:]) if optimizer_times else None,
        "probe": last_probe,
        "final": task.evaluate(),
    }


def run(config: DictConfig, directory: Path) -> dict[str, Any]:
    """Run one configuration into ``directory``; returns the summary (also written as ``summary.json``).

    ConfigError and KeyboardInterrupt are re-raised after the summary is written, so the caller can
    report them; a diverged or failed run is recorded and returned.
    """
    directory = Path(directory)
    started = time.perf_counter()
    recorder = Recorder(directory)
    summary: dict[str, Any] = {
        "task": config.task.name,
        "estimator": config.estimator.name,
        "optimizer": config.optimizer.name,
        "seed": config.seed,
        "status": "ok",
        "steps": 0,
        "wall_time_s": 0.0,
        "step_time_ms": None,
        "optimizer_time_ms": None,
        "estimate_time_ms": None,
        "final_loss": None,
        **{name: None for name in PROBE_FIELDS},
        "reference": getattr(get_object(config.task._target_), "reference", "none")
        if "_target_" in config.task
        else "none",
        "error": None,
        "samples": config.samples,
        "probe_draws": config.probe.draws,
        "config_digest": config_digest(config),
        "variant_digest": variant_digest(config),
        **provenance(),
    }
    summary["threads"] = torch.get_num_threads()
    pending: BaseException | None = None
    try:
        check_settings(config)  # before the seed and the threads are used (setup checks again, harmlessly)
        torch.manual_seed(config.seed)
        if config.get("threads"):
            torch.set_num_threads(int(config.threads))
            summary["threads"] = torch.get_num_threads()
        task, estimator, optimizer = setup(config)
        summary.update(reference=task.reference, samples=int(config.samples))
        measured = train(config, task, estimator, optimizer, recorder)
        summary.update(
            steps=measured["steps"],
            step_time_ms=measured["step_time_ms"],
            optimizer_time_ms=measured["optimizer_time_ms"],
        )
        summary.update(final_loss=measured["final"].get("objective"), **measured["probe"])
    except ConfigError as error:
        summary.update(status=error.status, error=str(error))
        pending = error
    except EstimatorError as error:  # an estimator refusing the task's input (disarm given 3 classes)
        summary.update(status="failed", error=str(error))
        pending = ConfigError(str(error))
    except Diverged as error:
        summary.update(
            status="diverged",
            error=str(error.args[0]),
            steps=recorder.completed_steps,  # steps finished: a step that diverged did not finish
            diverged_step=error.args[1],
        )
    except KeyboardInterrupt as error:
        summary.update(
            status="failed",
            steps=recorder.completed_steps,
            error=f"interrupted (SIGINT / Ctrl-C) after {recorder.completed_steps} of {config.steps} steps",
        )
        pending = error
    except Exception as error:  # noqa: BLE001 - a sweep must go on past a failing run
        summary.update(
            status="failed", steps=recorder.completed_steps, error=f"{type(error).__name__}: {error}"
        )
        (directory / "error.log").write_text(traceback.format_exc())
    summary["wall_time_s"] = time.perf_counter() - started
    if recorder.rows:
        recorder.flush()
    write_summary(directory / "summary.json", summary)
    if pending is not None:
        raise pending
    return summary


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
    if summary["status"] == "ok":
        bias_ratio = "n/a"
        if summary.get("grad_bias") is not None and summary.get("grad_bias_se"):
            bias_ratio = f"{summary['grad_bias'] / summary['grad_bias_se']:.1f}"
        bias = (
            "no reference gradient, so no bias"
            if summary["reference"] == "none"
            else f"bias {number('grad_bias')} (= {bias_ratio} standard errors; reference: "
            f"{summary['reference']}), cosine {number('grad_cos', '.3f')}"
        )
        lines += [
            f"  final objective {number('final_loss')}   after {summary['steps']} steps, "
            f"{number('wall_time_s', '.1f')} s ({number('step_time_ms', '.3g')} ms/step)",
            f"  gradient at the end (M={summary['probe_draws']} draws, S={summary['samples']}): "
            f"variance {number('grad_variance')}, {bias}",
        ]
    lines.append(f"  results in {directory}")
    return "\n".join(lines)
