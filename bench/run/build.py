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
from bench.run.limits import check_limits
from bench.run.limits import check_task as check_task_limits
from bench.run.probe import check_vectorize, check_wrt
from bench.tasks.base import Task
from bench.tasks.custom import check_task
from estimators.base import Estimator, EstimatorError
from optim.evaluation import chain, is_schedule_free
from optim.schedules import SCHEDULES, check_schedule, decays, scheduler


def unwrap(error: BaseException) -> BaseException:
    """Hydra wraps errors raised while instantiating; find the one we raised ourselves."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


MAX_DRAWS = 1_000_000  # probe.draws at most: a per-draw loop of 10^9 draws ran out of memory on the toy

# Keys of an optimizer config read by the run, not by the optimizer's constructor: its learning-rate schedule
# (``bench.run.build.make_scheduler``) and the gradients it takes (``check_gradients``).
RUN_SETTINGS = ("name", "schedule", "warmup_steps", "gradients")


def drop_names(node: Any) -> Any:
    """Remove the ``name`` key (and the run's own settings, ``RUN_SETTINGS``) from every node that has a
    ``_target_``, nested ones included.

    Configs name themselves (``name:``), constructors do not take it; a nested node is, e.g., the inner
    optimizer of ``optimizer=lookahead``.
    """
    if isinstance(node, dict):
        named = "_target_" in node
        return {key: drop_names(value) for key, value in node.items() if not (named and key in RUN_SETTINGS)}
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


def tasks_for(latents: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the bundled task configs whose task class declares one of the latent kinds ``latents``
    (a task built by a factory, ``task=custom``, declares its kind only once built: not listed)."""
    names = []
    for path in sorted((CONF_DIR / "task").glob("*.yaml")):
        try:
            target = get_object(config_target(path) or "")
        except Exception:  # noqa: BLE001 - a broken config must not hide the others
            continue
        if isinstance(target, type) and getattr(target, "latent", None) in latents:
            names.append(path.stem)
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
            2 <= config.probe.draws <= MAX_DRAWS,
            f"probe.draws must be from 2 (a variance needs two draws) to {MAX_DRAWS:,} (the statistics' "
            f"standard errors shrink as 1/sqrt(M): more draws cost time and memory and add nothing a report "
            f"can show), got {config.probe.draws}.",
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
    check_limits(config)  # names, the seed's range, threads >= 1, preflight.memory_limit (bench.run.limits)
    check_schedule_settings(config)
    check_gradients(config)
    run_device(config)


def check_schedule_settings(config: DictConfig) -> None:
    """``optimizer.schedule`` is one of ``SCHEDULES``, with a warmup that fits the run; a wrapped optimizer's
    own node (Lookahead's ``inner``) leaves the schedule to the outer one."""
    node = config.optimizer
    schedule, warmup = node.get("schedule", "constant"), node.get("warmup_steps", 0)
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"unknown learning-rate schedule optimizer.schedule={schedule!r}; the schedules are "
            f"{', '.join(SCHEDULES)} (with optimizer.warmup_steps=N for a linear warmup first)."
        )
    try:
        check_schedule(schedule, warmup, config.steps)
    except ValueError as error:
        raise ConfigError(f"optimizer.{error}") from None
    inner = node.get("inner")
    if isinstance(inner, DictConfig) and (
        inner.get("schedule", "constant") != "constant" or inner.get("warmup_steps", 0) != 0
    ):
        raise ConfigError(
            f"{node.name}: set the schedule on the outer optimizer (optimizer.schedule, "
            f"optimizer.warmup_steps), not on optimizer.inner: one schedule moves the learning rate of the "
            f"parameter groups both share."
        )


def optimizers_for(gradients: str) -> list[str]:
    """Names of the optimizer configs that declare they take ``gradients`` (dense or sparse) gradients;
    Lookahead takes what its inner optimizer takes."""
    from omegaconf import OmegaConf as Conf

    names = []
    for path in sorted((CONF_DIR / "optimizer").glob("*.yaml")):
        declared = Conf.to_container(Conf.load(path), resolve=False).get("gradients")
        if isinstance(declared, str) and declared.startswith("${.inner"):
            names.append(f"{path.stem} (with one of the others as optimizer.inner)")
        elif declared is not None and gradients in declared:
            names.append(path.stem)
    return [name for name in names if "(" not in name] + [name for name in names if "(" in name]


def check_gradients(config: DictConfig) -> None:
    """A task whose gradients are sparse (``task.sparse=true``) with an optimizer whose config declares dense
    gradients only (``gradients: [dense]``) is refused, naming the optimizers that take sparse ones (and the
    other way round). An optimizer config without ``gradients`` is not checked."""
    declared = config.optimizer.get("gradients")
    if declared is None:
        return
    kind = "sparse" if config.task.get("sparse") is True else "dense"
    if kind in declared:
        return
    setting = "task.sparse=true" if kind == "sparse" else "task.sparse=false (the default)"
    raise ConfigError(
        f"optimizer '{config.optimizer.name}' takes {' and '.join(declared)} gradients only, and task "
        f"'{config.task.name}' with {setting} gives {kind} ones. Optimizers that take {kind} gradients: "
        f"{', '.join(optimizers_for(kind)) or 'none'}."
    )


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
        tasks = tasks_for(estimator_cls.latents)
        raise ConfigError(
            f"Estimator '{config.estimator.name}' does not fit task '{config.task.name}': the task's latent "
            f"variables are {latent}, the estimator supports {', '.join(estimator_cls.latents)}. "
            f"Estimators that fit {config.task.name}: {', '.join(fitting) or 'none'}. Tasks that "
            f"{config.estimator.name} fits: {', '.join(tasks) or 'none of the bundled ones'}.",
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
    check_task_limits(config, task, estimator, device)  # f's shape; memory of an estimate and of a probe
    task.to(device)
    estimator.to(device)
    check_vectorize(config.probe.get("vectorize", "auto"), task, estimator)
    check_wrt(config.probe.get("wrt", "parameters"), task)
    parameters = list(task.parameters())
    check_optimizer_memory(config, parameters, device)
    # Plain lists (betas), not OmegaConf's: an optimizer keeps them in its state dict, which a checkpoint
    # loads with weights_only.
    optimizer = build(config.optimizer, params=parameters, _convert_="all")
    if decays(config.optimizer.get("schedule", "constant")) and any(map(is_schedule_free, chain(optimizer))):
        raise ConfigError(
            f"{config.optimizer.name} is Schedule-Free: its averaging replaces a decaying learning-rate "
            f"schedule, so optimizer.schedule={config.optimizer.schedule} is refused; use "
            f"optimizer.schedule=constant, with optimizer.warmup_steps=N for a warmup."
        )
    return task, estimator, optimizer


def make_scheduler(config: DictConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The run's learning-rate schedule on ``optimizer`` (``optim.schedules``); None for a constant rate
    without warmup, which needs no scheduler."""
    schedule, warmup = config.optimizer.get("schedule", "constant"), config.optimizer.get("warmup_steps", 0)
    if schedule == "constant" and not warmup:
        return None
    return scheduler(optimizer, schedule, config.steps, warmup)


def optimizer_record(config: DictConfig, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What a summary records of the optimizer beyond its name: the schedule, its warmup, and how Muon split
    the parameters (``optimizer_split``, for Muon alone)."""
    record: dict[str, Any] = {
        "schedule": str(config.optimizer.get("schedule", "constant")),
        "warmup_steps": int(config.optimizer.get("warmup_steps", 0)),
    }
    for link in chain(optimizer):
        if not any("use_muon" in group for group in getattr(link, "param_groups", [])):
            continue  # not Muon: optim.muon (pytorch_optimizer: 0.9 s) is imported for Muon's runs alone
        from optim.muon import split_text

        split = split_text(link)
        if split is not None:
            record["optimizer_split"] = split
    return record


# The share of the memory available to a run that an optimizer's preconditioners may take.
PRECONDITIONER_SHARE = 0.5


def available_bytes(device: torch.device) -> int | None:
    """Memory available on the run's device: free GPU memory, or the CPU's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def preconditioner_memory(config: DictConfig, parameters: list[torch.Tensor]) -> int | None:
    """Bytes the optimizer's preconditioner matrices will take on these parameters: Shampoo's blocks, SOAP's
    two matrices per dimension up to its ``max_precondition_dim``; None for other optimizers."""
    node = config.optimizer
    if "inner" in node and isinstance(node.inner, DictConfig):
        node = node.inner
    target = node.get("_target_", "")
    if target == "optim.shampoo.BlockShampoo":
        from optim.shampoo import preconditioner_bytes  # here: pytorch_optimizer is slow to import

        block = int(node.get("block_size", 512))
        largest = int(node.get("no_preconditioning_for_layers_with_dim_gt", 8192))
        return sum(preconditioner_bytes(tuple(p.shape), block, largest, p.dtype) for p in parameters)
    if target == "pytorch_optimizer.SOAP":
        largest = int(node.get("max_precondition_dim", 10000))
        return sum(
            2 * d * d * p.element_size()
            for p in parameters
            if p.ndim > 1 or node.get("precondition_1d", False)
            for d in p.shape
            if d <= largest
        )
    return None


def check_optimizer_memory(config: DictConfig, parameters: list[torch.Tensor], device: torch.device) -> None:
    """Refuse an optimizer whose preconditioners would take more than ``PRECONDITIONER_SHARE`` of the memory
    available, before any of it is allocated."""
    needed = preconditioner_memory(config, parameters)
    available = available_bytes(device)
    if needed is None or available is None or needed <= PRECONDITIONER_SHARE * available:
        return
    raise ConfigError(
        f"optimizer '{config.optimizer.name}' would keep {needed / 2**20:,.0f} MiB of preconditioner "
        f"matrices for task '{config.task.name}', more than {PRECONDITIONER_SHARE:.0%} of the "
        f"{available / 2**20:,.0f} MiB available on {device}: lower optimizer.block_size (Shampoo) or "
        f"optimizer.max_precondition_dim (SOAP), or choose another optimizer."
    )
