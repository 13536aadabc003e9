"""Gradient probes: M independent gradient estimates at frozen parameters, and their statistics.

``probe`` draws the M estimates on the task's fixed probe batch (``bench.run.probe.draws``: one batched
``torch.func`` computation where the task and estimator allow it, else the per-draw loop) and computes their
statistics against the task's reference gradient (``bench.run.probe.statistics``): analytic, exact, or the
mean of N draws of an unbiased estimator (``monte_carlo``, ``bench.run.probe.reference``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from torch import Tensor

from bench.formats.contract import PROBE_FIELDS
from bench.formats.errors import ConfigError
from bench.run.device import synchronizer
from bench.run.probe.draws import (
    WRT_CHOICES,
    Targets,
    deterministic_gradient,
    draw_gradients,
    draw_gradients_vectorized,
    probe_targets,
    split_parameters,
    vectorized_draws,
)
from bench.run.probe.reference import monte_carlo_reference, unbiasedness_check
from bench.run.probe.statistics import flatten, gradient_statistics
from bench.run.probe.vectorize import (
    check_vectorize,
    mark_blocked,
    report_fallback,
    vectorization_blocker,
    vectorize_mode,
)
from bench.tasks.base import Task
from estimators.base import Estimator

__all__ = [
    "PROBE_FIELDS",
    "check_vectorize",
    "check_wrt",
    "draw_gradients",
    "draw_gradients_vectorized",
    "flatten",
    "gradient_statistics",
    "monte_carlo_reference",
    "probe",
    "split_parameters",
    "unbiasedness_check",
    "vectorization_blocker",
    "vectorize_mode",
]

log = logging.getLogger("bench.run.probe")
# Tasks whose Monte-Carlo reference was found too noisy: said once per process.
reported_noisy_references: set[type] = set()


def reference_gradient(task: Task, batch: Any, targets: Targets) -> Tensor | None:
    """The task's reference gradient with respect to the probe's targets, flattened; None without one."""
    if getattr(task, "reference", "none") == "none":
        return None
    if targets.wrt == "parameters" or targets.are_parameters:
        reference = task.reference_gradient(batch)
    else:
        reference = task.distribution_reference_gradient(targets.distribution(batch), batch)
    return None if reference is None else flatten(reference).detach()


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (a GPU's or the CPU allocator's)."""
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text


def probe(
    task: Task,
    estimator: Estimator,
    samples: int,
    draws: int,
    vectorize: Any = "auto",
    wrt: str = "parameters",
    reference_draws: int | None = None,
    reference_seed: int | None = None,
) -> dict[str, Any]:
    """One probe on the task's fixed probe batch: M gradient draws and their statistics.

    ``vectorize`` (``probe.vectorize``): ``auto`` draws the M estimates in one batched computation where
    ``vectorization_blocker`` finds nothing against it, else with the per-draw loop (logged once per task and
    estimator); ``true`` insists (ConfigError if blocked); ``false`` always loops. ``probe_vectorized`` (1 or
    0) records which path ran, ``probe_time_ms`` the time of the M draws. ``wrt`` (``probe.wrt``):
    ``parameters`` (the task's probed parameters) or ``distribution`` (the distribution's own parameters at
    the probe batch; ``bench.run.probe.draws.Targets``).

    Where the task's ``reference`` is ``monte_carlo``, the reference is the mean of N = ``reference_draws``
    (default: the task's ``reference_draws``) draws of an unbiased estimator with respect to the same targets,
    from a stream seeded with ``reference_seed`` (default: the probe's seed + a constant;
    ``bench.run.probe.reference``), and the result adds ``reference_estimator``, ``reference_samples``,
    ``reference_draws``, ``reference_variance`` and ``reference_time_ms``
    (``bench.formats.contract.REFERENCE_FIELDS``).
    """
    mode = check_vectorize(vectorize, task, estimator)
    check_wrt(wrt, task)
    batch = task.probe_batch()
    batches = task.probe_batches(draws)  # one data batch per draw, or None: every draw uses ``batch``
    if batches is not None and wrt == "distribution":
        raise ConfigError(
            f"probe.wrt=distribution needs one probe batch, but task {type(task).__name__} draws a fresh "
            "data batch for every probe draw (Task.probe_batches); use probe.wrt=parameters."
        )
    targets = probe_targets(task, batch, wrt)
    blocker = vectorization_blocker(task, estimator) if mode != "false" else None
    if batches is not None and mode != "false":
        blocker = blocker or "the task draws a fresh data batch for every draw (Task.probe_batches)"
    if blocker is not None and mode == "true":
        raise ConfigError(
            f"probe.vectorize=true, but {blocker}. Use probe.vectorize=auto to fall back to the per-draw "
            f"loop."
        )
    if blocker is not None:
        report_fallback(task, estimator, blocker)
    vectorized = mode != "false" and blocker is None
    synchronize = synchronizer(targets.tensors[0].device) if targets.tensors else lambda: None
    synchronize()  # a GPU's queued work is not the draws'; the time below is theirs alone
    start = time.perf_counter()
    deterministic = None
    if vectorized:
        try:
            drawn = vectorized_draws(task, estimator, samples, batch, draws, targets=targets)
            gradients, deterministic = drawn.gradients, drawn.deterministic
        except (RuntimeError, NotImplementedError) as error:
            # torch.func refuses some operations (.item(), data-dependent Python control flow, an
            # autograd.Function without a vmap rule); in auto mode the loop computes the same statistics.
            # Not when memory ran out: the loop would draw the same M estimates one by one, for hours.
            if mode == "true" or out_of_memory(error):
                raise
            reason = f"the vectorized draw failed with {type(error).__name__}: {str(error).splitlines()[0]}"
            mark_blocked(task, estimator, reason)
            report_fallback(task, estimator, reason, logging.WARNING)
            vectorized = False
            start = time.perf_counter()
    if not vectorized:
        gradients = draw_gradients(task, estimator, samples, batch, draws, batches, targets)
    synchronize()
    elapsed = time.perf_counter() - start
    # With a fresh batch per draw the deterministic terms differ between draws: not a constant to remove. The
    # vectorized draws computed it on the way.
    if not vectorized and batches is None:
        deterministic = deterministic_gradient(task, batch, targets)
    if getattr(task, "reference", "none") != "monte_carlo":
        stats: dict[str, Any] = gradient_statistics(
            gradients, reference_gradient(task, batch, targets), deterministic
        )
    else:
        if batches is not None:
            raise ConfigError(
                f"a Monte-Carlo reference needs one probe batch, but task {type(task).__name__} draws a "
                "fresh data batch for every probe draw (Task.probe_batches)."
            )
        count = reference_draws if reference_draws is not None else task.reference_draws

        reference = monte_carlo_reference(
            task, batch, targets, count, reference_seed, vectorize=mode != "false"
        )
        stats = gradient_statistics(gradients, None, deterministic, reference_draws=reference.draws)
        stats.update(reference.fields())
        report_noisy_reference(task, stats, draws)
    stats["probe_time_ms"] = 1000 * elapsed
    stats["probe_vectorized"] = float(vectorized)
    return stats


def report_noisy_reference(task: Task, stats: dict[str, Any], draws: int) -> None:
    """Log, once per task, a Monte-Carlo reference whose noise V̂_R/N exceeds the probe's own V̂/M.

    N ≥ 4·M·V̂_R/V̂ keeps it below a quarter of the probe's: the noise floor √(V̂/M + V̂_R/N) then exceeds the
    probe's own by at most 12%.
    """
    variance, reference_variance = stats["grad_variance"], stats["reference_variance"]
    count = stats["reference_draws"]
    noisy = variance > 0 and reference_variance / count > variance / draws
    if not noisy or type(task) in reported_noisy_references:
        return
    reported_noisy_references.add(type(task))
    log.warning(
        "the Monte-Carlo reference (%d draws of %s) is noisier than the probe: V̂_R/N = %.3g against V̂/M = "
        "%.3g; task.reference_draws >= %d keeps its noise below a quarter of the probe's",
        count,
        stats["reference_estimator"],
        reference_variance / count,
        variance / draws,
        math.ceil(4 * draws * reference_variance / variance),
    )


def check_wrt(value: Any, task: Task) -> str:
    """``probe.wrt``: ``parameters`` or ``distribution`` (the latter needs the task's loss split in parts)."""
    if value not in WRT_CHOICES:
        raise ConfigError(
            f"probe.wrt must be one of {', '.join(WRT_CHOICES)} (parameters: the task's probed parameters; "
            f"distribution: the distribution's own parameters, e.g. the encoder's output logits), got "
            f"probe.wrt={value!r}."
        )
    if value == "distribution" and type(task).loss is not Task.loss:
        raise ConfigError(
            f"probe.wrt=distribution needs the task's loss split into distribution, objective and "
            f"deterministic parts, but task {type(task).__name__} overrides loss(); use probe.wrt=parameters."
        )
    return value
