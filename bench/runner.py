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
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench.errors import ConfigError
from bench.probe import PROBE_FIELDS, probe
from bench.results import provenance, write_metrics, write_summary
from bench.tasks.base import Task
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


def check_settings(config: DictConfig) -> None:
    """Range checks on the top-level settings, each failing with a message that names the key."""
    checks = [
        (config.steps >= 1, f"steps must be >= 1, got steps={config.steps}."),
        (config.samples is None or config.samples >= 1, f"samples must be >= 1, got samples={config.samples}."),
        (config.probe.draws >= 2, f"probe.draws must be >= 2 (a variance needs two draws), got {config.probe.draws}."),
        (config.probe.every >= 0, f"probe.every must be >= 0 (0: probe only at the end), got {config.probe.every}."),
        (config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}."),
    ]
    lr = config.optimizer.get("lr")
    if lr is not None:
        checks.append((lr > 0, f"optimizer.lr must be > 0, got optimizer.lr={lr}."))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def setup(config: DictConfig) -> tuple[Task, Estimator, torch.optim.Optimizer]:
    check_settings(config)
    task_class, estimator_cls = get_class(config.task._target_), estimator_class(config.estimator)
    if task_class.latent not in estimator_cls.latents:
        fitting = estimators_for(task_class.latent)
        raise ConfigError(
            f"Estimator '{config.estimator.name}' does not fit task '{config.task.name}': the task's latent "
            f"variables are {task_class.latent}, the estimator supports {', '.join(estimator_cls.latents)}. "
            f"Estimators that fit {config.task.name}: {', '.join(fitting) or 'none'}.",
            status="skipped",
        )
    task = build(config.task)
    estimator = build(config.estimator)
    if config.samples is None:  # each estimator's smallest sample count: 1, or 2 for a leave-one-out baseline
        config.samples = estimator.min_samples
    try:
        estimator.check_samples(config.samples)
    except EstimatorError as error:
        raise ConfigError(f"estimator '{config.estimator.name}': {error}") from None
    optimizer = build(config.optimizer, params=list(task.parameters()))
    return task, estimator, optimizer


@dataclass
class Recorder:
    """Collects the long-form metrics and writes them, atomically, as the run goes."""

    directory: Path
    rows: list[tuple[int, str, float]] = field(default_factory=list)

    def add(self, step: int, values: dict[str, float]) -> None:
        self.rows.extend((step, name, float(value)) for name, value in values.items())

    def flush(self) -> None:
        write_metrics(self.directory / "metrics.csv", self.rows)


def finite_gradients(parameters: list[torch.Tensor]) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in parameters)


def probe_steps(steps: int, every: int) -> set[int]:
    return set(range(0, steps + 1, every)) | {steps} if every else {steps}


def train(config: DictConfig, task: Task, estimator: Estimator, optimizer, recorder: Recorder) -> dict[str, Any]:
    """The training loop with probes; returns the summary fields it measured."""
    parameters = list(task.parameters())
    planned = probe_steps(config.steps, config.probe.every)
    step_times: list[float] = []
    optimizer_times: list[float] = []
    last_probe: dict[str, float] = {}
    running_loss, running_count = 0.0, 0

    def do_probe(step: int) -> None:
        nonlocal last_probe
        # Probes draw from their own seeded stream, so probing more or less often does not change training.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed * 1_000_003 + step)
            last_probe = probe(task, estimator, config.samples, config.probe.draws)
        # Wall times go to summary.json only: metrics.csv holds what the seed determines, so that it is
        # bit-for-bit reproducible.
        measured = {name: value for name, value in last_probe.items() if not name.endswith("_time_ms")}
        recorder.add(step, {**task.evaluate(), **measured})
        recorder.flush()

    progress = tqdm(
        range(1, config.steps + 1),
        desc=f"{config.task.name}/{config.estimator.name}",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    step = 0
    if 0 in planned:
        do_probe(0)
    for step in progress:
        started = time.perf_counter()
        scheduled = estimator.on_step(step) or {}  # e.g. the temperature, when a schedule moved it
        if scheduled:
            recorder.add(step, scheduled)
        batch = task.train_batch(step)
        loss = task.loss(estimator, config.samples, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not (math.isfinite(value) and finite_gradients(parameters)):
            raise Diverged(f"the loss or a gradient became non-finite (loss={value}) at step {step}", step)
        optimizer_started = time.perf_counter()
        optimizer.step()
        finished = time.perf_counter()
        step_times.append(finished - started)
        optimizer_times.append(finished - optimizer_started)
        extra = task.after_step(step, batch)
        running_loss, running_count = running_loss + value, running_count + 1
        if step % config.log_every == 0:
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
        "seed": int(config.seed),
        "status": "ok",
        "steps": 0,
        "wall_time_s": 0.0,
        "step_time_ms": None,
        "optimizer_time_ms": None,
        "estimate_time_ms": None,
        "final_loss": None,
        **{name: None for name in PROBE_FIELDS},
        "reference": get_class(config.task._target_).reference if "_target_" in config.task else "none",
        "error": None,
        "samples": config.samples,
        "probe_draws": int(config.probe.draws),
        **provenance(),
    }
    torch.manual_seed(config.seed)
    if config.get("threads"):
        torch.set_num_threads(int(config.threads))
    pending: BaseException | None = None
    try:
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
    except Diverged as error:
        summary.update(status="diverged", error=str(error.args[0]), steps=error.args[1], diverged_step=error.args[1])
    except KeyboardInterrupt as error:
        summary.update(status="failed", error="interrupted (SIGINT / Ctrl-C) before the run finished")
        pending = error
    except Exception as error:  # noqa: BLE001 - a sweep must go on past a failing run
        summary.update(status="failed", error=f"{type(error).__name__}: {error}")
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
        return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)

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
        lines += [
            f"  final objective {number('final_loss')}   after {summary['steps']} steps, "
            f"{number('wall_time_s', '.1f')} s ({number('step_time_ms', '.3g')} ms/step)",
            f"  gradient at the end (M={summary['probe_draws']} draws, S={summary['samples']}): "
            f"variance {number('grad_variance')}, bias {number('grad_bias')} "
            f"(= {bias_ratio} standard errors; reference: {summary['reference']}), cosine {number('grad_cos', '.3f')}",
        ]
    lines.append(f"  results in {directory}")
    return "\n".join(lines)
