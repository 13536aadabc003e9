"""What a run checks before it allocates: names that become paths, the seed's range, the thread count, the
shape of the task's f, and the memory of one gradient estimate and of one probe.

``check_limits(config)`` (``bench.run.build.check_settings``): ``task.name``, ``estimator.name`` and
``optimizer.name`` are safe names (``bench.formats.names``: they become folder and file names), ``seed`` is a
whole number in [0, 2^32) (torch, numpy and the probes derive further seeds from it), ``threads`` is null
or at least 1 (0 does not mean "the default"), and ``preflight.memory_limit`` reads as a size.

``check_task(config, task, estimator)`` (``bench.run.build.setup``, once the task and the estimator are
built, on the CPU, before anything else is allocated): f is called once on two samples at the probe batch
(the distribution's most likely outcome; no random number drawn, the task's modules in eval mode) and must
return values of shape (S, *batch[:k]), the message naming the shapes it may return; then the memory of
one estimate and of one probe, estimated from the settings, must fit ``preflight.memory_limit`` (a size
such as ``8GB``, ``512MiB`` or a number of bytes), else the memory available (the CPU's ``MemAvailable``,
a GPU's free memory), the message naming the keys to lower.

The estimates are lower bounds, so that nothing that fits is refused: one estimate holds at least its S
samples and the noise they are drawn from (each of the shape of the distribution's parameters at the
batch, times S); one probe holds its M gradient estimates (M × the probed parameters), and a vectorized probe
the M estimates' samples at once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.nn import functional
from torch.utils._pytree import tree_leaves

from bench.formats.errors import ConfigError
from bench.formats.names import check_name
from bench.tasks.base import Task
from estimators.base import Estimator

SEED_LIMIT = 2**32
NAMED = ("task.name", "estimator.name", "optimizer.name")
UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
CHECKED_SAMPLES = 2  # the samples f is called on at setup


def check_limits(config: DictConfig) -> None:
    """Names, seed, threads and ``preflight.memory_limit``, each refusal naming its key (module docstring)."""
    for key in NAMED:
        value = OmegaConf.select(config, key, default=None)
        if value is not None:
            check_name(value, key)
    seed = config.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < SEED_LIMIT:
        raise ConfigError(
            f"seed must be a whole number from 0 to {SEED_LIMIT - 1} (2^32 - 1: torch, numpy and the probes "
            f"derive their own seeds from it), got seed={seed}."
        )
    threads = config.get("threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and threads < 1:
        raise ConfigError(
            f"threads must be at least 1 (torch threads for this run), or null for torch's default (under a "
            f"parallel launcher, the cores shared out; in a SLURM job, its CPUs), got threads={threads}."
        )
    memory_limit(config)


def memory_limit(config: DictConfig) -> int | None:
    """``preflight.memory_limit`` in bytes (None: not set); ConfigError if it is not a size."""
    value = OmegaConf.select(config, "preflight.memory_limit", default=None)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value > 0 and math.isfinite(value):
            return int(value)
    elif isinstance(value, str):
        form = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]i?)?b?\s*", value.lower())
        if form is not None and float(form.group(1)) > 0:
            unit = form.group(2) or ""
            return int(float(form.group(1)) * (BINARY.get(unit) or UNITS[unit]))
    raise ConfigError(
        f"preflight.memory_limit must be a size > 0: a number of bytes or a number with a unit (8GB, 512MB, "
        f"16GiB), or null for the memory available; got preflight.memory_limit={value!r}."
    )


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``: a GPU's free memory, the CPU's ``MemAvailable`` (Linux); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def size_text(size: float) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{int(size)} bytes"


def shapes_text(samples: int, batch: tuple[int, ...]) -> str:
    return " or ".join(str((samples, *batch[:kept])) for kept in range(len(batch) + 1))


def most_likely(params: Any, latent: str) -> Tensor | None:
    """The distribution's most likely outcome, repeated ``CHECKED_SAMPLES`` times; None for other kinds."""
    if latent == "categorical" and isinstance(params, Tensor):
        outcome = functional.one_hot(params.argmax(-1), params.shape[-1]).to(params.dtype)
    elif latent == "gaussian" and hasattr(params, "mean"):
        outcome = params.mean
    else:
        return None
    return outcome.detach().unsqueeze(0).repeat(CHECKED_SAMPLES, *([1] * outcome.dim()))


def check_objective(task: Task, params: Any, batch: Any) -> None:
    """f called once on samples of the distribution at ``batch``; ConfigError naming the shapes it may
    return when it returns another."""
    samples = most_likely(params, task.latent)
    if samples is None or type(task).objective is Task.objective:  # a task that implements loss() itself
        return
    batch_shape = tuple(params.shape[:-1] if task.latent == "categorical" else params.mean.shape)
    try:
        values = task.objective(batch)(samples)
    except Exception as error:  # noqa: BLE001 - whatever a user's f raises, named with the shapes it gets
        raise ConfigError(
            f"task {type(task).__name__}: its f (task.objective(batch)) failed on samples of shape "
            f"{tuple(samples.shape)} ({type(error).__name__}: {error}); f takes samples of shape (S, *batch, "
            f"*event) and returns {shapes_text(CHECKED_SAMPLES, batch_shape)}: one value per sample and "
            f"data point, summed over any batch dimensions it couples (bench/tasks/base.py)."
        ) from None
    shape = tuple(values.shape) if isinstance(values, Tensor) else None
    kept = len(shape) - 1 if shape is not None else -1
    if shape is None or not 0 <= kept <= len(batch_shape) or shape != (CHECKED_SAMPLES, *batch_shape[:kept]):
        got = f"values of shape {shape}" if shape is not None else f"a {type(values).__name__}"
        expected = shapes_text(CHECKED_SAMPLES, batch_shape)
        raise ConfigError(
            f"task {type(task).__name__}: its f (task.objective(batch)) returned {got} for samples of shape "
            f"{tuple(samples.shape)}; it must return a tensor of shape {expected} (S samples, then the first "
            f"k of the batch dimensions {batch_shape}): one value per sample and data point, summed over the "
            f"rest (bench/tasks/base.py)."
        )


def check_task(config: DictConfig, task: Task, estimator: Estimator, device: torch.device) -> None:
    """f's shape, then the memory of one estimate and of one probe (module docstring)."""
    modes = {module: module.training for module in task.modules()}
    task.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            batch = task.probe_batch()
            params = task.distribution(batch) if task.latent != "none" else None
            if params is not None:
                check_objective(task, params, batch)
    finally:
        for module, training in modes.items():
            module.training = training
    check_memory(config, task, estimator, params, device)


def check_memory(
    config: DictConfig, task: Task, estimator: Estimator, params: Any, device: torch.device
) -> None:
    """ConfigError when one estimate or one probe needs more than the limit (module docstring)."""
    from bench.run.probe import vectorization_blocker, vectorize_mode

    leaves = [leaf for leaf in tree_leaves(params) if isinstance(leaf, Tensor)]
    per_sample = leaves[0].numel() * leaves[0].element_size() if leaves else 0
    samples, draws = int(config.samples or 1), int(config.probe.draws)
    estimate = 2 * samples * per_sample  # the samples and the noise they are drawn from
    wrt = config.probe.get("wrt", "parameters")
    probed = (
        sum(leaf.numel() for leaf in leaves)
        if wrt == "distribution"
        else sum(parameter.numel() for parameter in task.probed_parameters().values())
    )
    probe = draws * probed * 4  # the M gradient estimates, float32
    vectorized = vectorize_mode(config.probe.get("vectorize", "auto")) != "false"
    if vectorized and vectorization_blocker(task, estimator) is None:
        probe += draws * estimate
    limit = memory_limit(config)
    source = "preflight.memory_limit"
    if limit is None:
        limit, source = available_memory(device), f"the memory available on {device.type}"
    if limit is None:
        return
    for what, needed, keys in (
        ("one gradient estimate", estimate, f"samples={samples}"),
        ("one probe", probe, f"probe.draws={draws}" + (f", samples={samples}" if vectorized else "")),
    ):
        if needed > limit:
            raise ConfigError(
                f"{what} would need at least {size_text(needed)} ({keys}; one sample of the distribution at "
                f"the probe batch takes {size_text(per_sample)}; {probed} probed numbers), "
                f"more than {source} ({size_text(limit)}). Lower {keys.split('=')[0]}, or set "
                f"preflight.memory_limit=SIZE (e.g. 64GB) where more memory will be there."
            )
