"""Whether a probe's M draws are vectorized (one ``torch.func.vmap``) or drawn in a loop, and why not.

``probe.vectorize``: ``auto`` (vectorize where the task and the estimator allow it, else the loop, said once
per process), ``true`` (insist: refused before training when the pair cannot be vectorized) or ``false``.
"""

from __future__ import annotations

import logging
from typing import Any

from bench.formats.errors import ConfigError
from bench.tasks.base import Task
from estimators.base import Estimator

VECTORIZE_CHOICES = ("auto", "true", "false")


log = logging.getLogger("bench.run.probe")

# Pairs (task class, estimator class) whose vectorized draw failed at run time in ``auto`` mode, with the
# reason: they are not tried again in this process.
runtime_blockers: dict[tuple[type, type], str] = {}
# Pairs whose fallback to the loop was already logged: it is said once per process, not at every probe.
reported_fallbacks: set[tuple[type, type]] = set()


def vectorize_mode(value: Any) -> str:
    """``probe.vectorize`` as one of ``auto``, ``true``, ``false`` (YAML booleans accepted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    mode = "auto" if value is None else str(value).strip().lower()
    if mode not in VECTORIZE_CHOICES:
        raise ConfigError(
            f"probe.vectorize must be auto (vectorize where possible, else the per-draw loop), true or "
            f"false; got probe.vectorize={value!r}."
        )
    return mode


def vectorization_blocker(task: Task, estimator: Estimator) -> str | None:
    """Why the M estimates of this task and estimator cannot be drawn in one ``vmap``; None if they can.

    An estimator or task opts out with a class attribute ``vectorizable = False`` and says why in
    ``vectorizable_reason`` (e.g. a custom ``autograd.Function`` without a vmap rule, or an encoder that is
    itself random). A task that overrides ``loss`` cannot be split into distribution, objective and
    deterministic parts, which the vectorized path needs.
    """
    for role, part in (("estimator", estimator), ("task", task)):
        if not getattr(part, "vectorizable", True):
            reason = getattr(part, "vectorizable_reason", "") or "no reason given"
            return f"{role} {type(part).__name__} declares vectorizable = False: {reason}"
    if type(task).loss is not Task.loss:
        return (
            f"task {type(task).__name__} overrides loss(), so the probe cannot split it into the "
            f"distribution, objective and deterministic parts that the vectorized path differentiates "
            f"separately"
        )
    return runtime_blockers.get((type(task), type(estimator)))


def mark_blocked(task: Task, estimator: Estimator, reason: str) -> None:
    """Remember that this pair's vectorized draw failed at run time: it is not tried again in this process."""
    runtime_blockers[(type(task), type(estimator))] = reason


def check_vectorize(value: Any, task: Task, estimator: Estimator) -> str:
    """Validate ``probe.vectorize`` for this task and estimator before training; returns the mode.

    ConfigError for a value other than auto/true/false, and for ``true`` when the pair cannot be vectorized.
    """
    mode = vectorize_mode(value)
    blocker = vectorization_blocker(task, estimator) if mode == "true" else None
    if blocker is not None:
        raise ConfigError(
            f"probe.vectorize=true, but {blocker}. Use probe.vectorize=auto to fall back to the per-draw "
            f"loop for this estimator and task."
        )
    return mode


def report_fallback(task: Task, estimator: Estimator, reason: str, level: int = logging.INFO) -> None:
    key = (type(task), type(estimator))
    if key not in reported_fallbacks:
        reported_fallbacks.add(key)
        log.log(
            level,
            "gradient probe uses the per-draw loop for %s / %s: %s",
            type(task).__name__,
            type(estimator).__name__,
            reason,
        )
