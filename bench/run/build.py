"""From a config to objects: the task, the estimator and the optimizer of a run, with its settings checked.

It knows tasks only through ``bench.tasks.base.Task`` and estimators only through
``estimators.base.Estimator``; names come from the configs (``name`` key) and classes from ``_target_``.
Every refusal is a ``ConfigError`` whose message names the key, the value and the fix.

The device (``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``): the task and the estimator are built on the
CPU, from the run's seed (so a run's initial parameters are the same on every device), then moved to the
run's device with ``Module.to``, before the optimizer is built on their parameters; everything a run
computes then lives there. A task keeps its data in registered buffers to take it along.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from bench.formats.configs import CONF_DIR, config_target
from bench.formats.contract import SKIPPED
from bench.formats.errors import ConfigError
from bench.run.device import run_device
from bench.run.probe import check_vectorize, check_wrt
from bench.tasks.base import Task
from bench.tasks.custom import check_task
from estimators.base import Estimator, EstimatorError


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


# Keys of a group config that describe it rather than construct it: its name, and (tasks) the report panels
# it declares (read by ``bench.report`` from the run's ``.hydra/config.yaml``).
NOT_ARGUMENTS = ("name", "report")


def build(config: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a config group node, dropping its ``name`` and ``report`` keys; config errors come out as
    ConfigError."""
    node = drop_names(OmegaConf.to_container(config, resolve=True))
    for key in NOT_ARGUMENTS:
        node.pop(key, None)
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, EstimatorError, ConfigError, TypeError, ValueError) as error:
        cause = unwrap(error)
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{config.get('name', node.get('_target_'))}: {cause}") from None


def estimator_class(config: DictConfig) -> type[Estimator]:
    return get_class(config._target_)


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
    run_device(config)


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
            status=SKIPPED,
        )
    task = build(config.task) if task is None else task
    if estimator_cls.multi_sample and not task.multi_sample:
        raise ConfigError(
            f"Estimator '{config.estimator.name}' trains a multi-sample objective (the K-sample importance-"
            f"weighted bound), and task '{config.task.name}' has none with these settings"
            f"{' (set task.objective=iwae)' if 'objective' in config.task else ''}.",
            status=SKIPPED,
        )
    estimator = build(config.estimator)
    if config.samples is None:  # each estimator's smallest sample count: 1, or 2 for a leave-one-out baseline
        config.samples = estimator.min_samples
    try:
        estimator.check_samples(config.samples)
    except EstimatorError as error:
        raise ConfigError(f"estimator '{config.estimator.name}': {error}") from None
    device = run_device(config)
    task.to(device)
    estimator.to(device)
    check_vectorize(config.probe.get("vectorize", "auto"), task, estimator)
    check_wrt(config.probe.get("wrt", "parameters"), task)
    optimizer = build(config.optimizer, params=list(task.parameters()))
    return task, estimator, optimizer
