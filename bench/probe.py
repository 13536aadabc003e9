"""Gradient probes: M independent gradient estimates at frozen parameters, and their statistics.

The statistics are exactly those of DESIGN.md ("Metrics"): with ĝ_1..ĝ_M the estimates (each with the
run's own sample count S), ḡ their mean and g* the reference gradient,

    grad_variance = 1/(M−1) Σ ‖ĝ_m − ḡ‖²            trace of the covariance of ONE estimate
    grad_bias     = ‖ḡ − g*‖,  grad_bias_se = √(grad_variance / M)
    grad_bias_sq  = ‖ḡ − g*‖² − grad_variance / M    unbiased estimate of the squared bias
    grad_mse      = 1/M Σ ‖ĝ_m − g*‖²,  grad_cos = cos(ḡ, g*),  grad_snr = ‖ḡ‖² / grad_variance

Without a reference the bias fields are NaN.

Two ways to draw the M estimates give the same statistics: ``draw_gradients`` runs ``task.loss`` M times
(the per-draw loop), ``draw_gradients_vectorized`` draws them in one batched computation with
``torch.func`` (DESIGN.md, "Implementation notes"). ``probe(..., vectorize="auto")`` uses the vectorized
path where the task and estimator allow it (``vectorization_blocker``) and the loop otherwise.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from bench.errors import ConfigError
from bench.tasks.base import Task
from estimators.base import Estimator

PROBE_FIELDS = (
    "grad_variance",
    "grad_bias",
    "grad_bias_se",
    "grad_bias_sq",
    "grad_mse",
    "grad_cos",
    "grad_snr",
)


def flatten(tensors: list[Tensor]) -> Tensor:
    # A sparse gradient (nn.Embedding(sparse=True)) is made dense: the statistics are over all entries.
    return torch.cat([(tensor.to_dense() if tensor.is_sparse else tensor).reshape(-1) for tensor in tensors])


def draw_gradients(
    task: Task, estimator: Estimator, samples: int, batch: Any, draws: int, batches: list[Any] | None = None
) -> Tensor:
    """M gradient estimates of ``task.loss`` with respect to the probed parameters, shape (M, P).

    Every draw uses ``batch``, or draw m uses ``batches[m]`` when given (``Task.probe_batches``).

    The estimator is put in eval mode so that stateful parts (an EMA baseline) are read, not updated.
    """
    parameters = list(task.probed_parameters().values())
    was_training = estimator.training
    estimator.eval()
    try:
        rows = []
        for draw in range(draws):
            loss = task.loss(estimator, samples, batch if batches is None else batches[draw])
            rows.append(
                flatten(torch.autograd.grad(loss, parameters, allow_unused=True, materialize_grads=True))
            )
    finally:
        estimator.train(was_training)
    return torch.stack(rows)


def gradient_statistics(gradients: Tensor, reference: Tensor | None) -> dict[str, float]:
    """The probe fields for M estimates (rows of ``gradients``) against an optional reference."""
    draws = gradients.shape[0]
    # One float64 copy, centred in place, and one pass for its norm: (M, P) can be large (M = 256 draws over
    # a VAE encoder's 12k parameters), and temporaries of that size cost more than the draws (bench.perf).
    centred = gradients.to(torch.float64, copy=True)
    mean = centred.mean(0)
    centred -= mean
    variance = float(torch.linalg.vector_norm(centred) ** 2 / (draws - 1))
    mean_norm_sq = float(mean @ mean)
    stats = {
        "grad_variance": variance,
        "grad_bias_se": math.sqrt(variance / draws),
        "grad_snr": mean_norm_sq / variance if variance > 0 else math.inf,
        "grad_bias": math.nan,
        "grad_bias_sq": math.nan,
        "grad_mse": math.nan,
        "grad_cos": math.nan,
    }
    if reference is not None:
        reference = reference.double()
        error = mean - reference
        norms = float(mean.norm() * reference.norm())
        stats.update(
            grad_bias=float(error.norm()),
            grad_bias_sq=float(error @ error) - variance / draws,
            # 1/M Σ‖ĝ_m − g*‖² = ‖ḡ − g*‖² + 1/M Σ‖ĝ_m − ḡ‖²  (exact identity; no second pass over the draws)
            grad_mse=float(error @ error) + variance * (draws - 1) / draws,
            grad_cos=float(mean @ reference) / norms if norms > 0 else math.nan,
        )
    return stats


VECTORIZE_CHOICES = ("auto", "true", "false")
TIMED_ESTIMATES = 3  # single draws timed after a vectorized probe, for estimate_time_ms

log = logging.getLogger(__name__)

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


def split_parameters(params: Any) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    """The tensors inside distribution parameters and a function that rebuilds them from replacements.

    ``params`` is a tensor (categorical logits), a dataclass of tensors (``estimators.Gaussian``), or a
    tuple, list or dict of these; anything else is a constant that is passed through unchanged.
    """
    if isinstance(params, Tensor):
        return [params], lambda leaves: leaves[0]
    if is_dataclass(params) and not isinstance(params, type):
        names = [field.name for field in fields(params) if field.init]
        return combine(
            [split_parameters(getattr(params, name)) for name in names],
            lambda values: replace(params, **dict(zip(names, values, strict=True))),
        )
    if isinstance(params, dict):
        keys = list(params)
        return combine(
            [split_parameters(params[key]) for key in keys],
            lambda values: dict(zip(keys, values, strict=True)),
        )
    if isinstance(params, (tuple, list)):
        kind = type(params)
        build = (lambda values: kind(*values)) if hasattr(params, "_fields") else kind
        return combine([split_parameters(item) for item in params], build)
    return [], lambda leaves: params


def combine(
    children: list[tuple[list[Tensor], Callable[[list[Tensor]], Any]]], assemble: Callable[[list[Any]], Any]
) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    counts = [len(leaves) for leaves, _ in children]

    def rebuild(leaves: list[Tensor]) -> Any:
        values, start = [], 0
        for count, (_, child) in zip(counts, children, strict=True):
            values.append(child(list(leaves[start : start + count])))
            start += count
        return assemble(values)

    return [leaf for leaves, _ in children for leaf in leaves], rebuild


class StochasticPart(nn.Module):
    """``estimator(params, f, S).mean()`` as a function of the distribution parameters' tensors.

    A module holding the task and the estimator, so that ``torch.func.functional_call`` can swap in the
    task parameters that f reads directly (a decoder's weights, when those are probed). f is built inside
    ``forward`` so that it reads the swapped parameters.
    """

    def __init__(self, task: Task, estimator: Estimator, samples: int, batch: Any, rebuild: Callable) -> None:
        super().__init__()
        self.task, self.estimator = task, estimator
        self.samples, self.batch, self.rebuild = samples, batch, rebuild

    def forward(self, leaves: list[Tensor]) -> Tensor:
        return self.estimator(self.rebuild(leaves), self.task.objective(self.batch), self.samples).mean()


def read_directly(stochastic: StochasticPart, leaves: list[Tensor], targets: list[Tensor]) -> list[bool]:
    """Which probed parameters f reads other than through the distribution parameters (one trial draw)."""
    with torch.enable_grad():
        trial = [leaf.detach().requires_grad_(leaf.requires_grad) for leaf in leaves]
        value = stochastic(trial)
        if not value.requires_grad:
            return [False] * len(targets)
        used = torch.autograd.grad(value, targets, allow_unused=True)
    return [gradient is not None for gradient in used]


def draw_gradients_vectorized(
    task: Task, estimator: Estimator, samples: int, batch: Any, draws: int, chunk_size: int | None = None
) -> Tensor:
    """The same M estimates as ``draw_gradients`` (shape (M, P)), drawn in one batched computation.

    The randomness enters after the encoder (DESIGN.md, "Implementation notes"), so:

    1. ``params = task.distribution(batch)`` is computed once, with its autograd graph to the probed
       parameters; the deterministic term's gradient is the same in every draw and is computed once;
    2. the M gradients of ``estimator(params, f, S)`` with respect to the tensors of ``params`` (and to
       probed parameters that f reads directly, through ``functional_call``) come from
       ``vmap(grad(.), randomness="different")``: every draw gets its own noise from the global generator;
    3. one batched vector-Jacobian product (``autograd.grad(..., is_grads_batched=True)``) maps them back
       through the encoder to the probed parameters. Where the distribution parameters ARE the probed
       parameters (``toy``, ``gaussian``) that map is the identity and is skipped.

    The estimator is in eval mode, so an EMA baseline is read, not updated. This assumes that
    ``task.distribution`` is deterministic; a task whose encoder is random declares ``vectorizable = False``.
    ``chunk_size`` bounds memory by vectorizing that many draws at a time.
    """
    targets = list(task.probed_parameters().values())
    position = {id(target): index for index, target in enumerate(targets)}
    module_names = {id(parameter): name for name, parameter in task.named_parameters(remove_duplicate=False)}
    was_training = estimator.training
    estimator.eval()
    try:
        with torch.enable_grad():
            params = task.distribution(batch)
            leaves, rebuild = split_parameters(params)
            deterministic = task.deterministic(params, batch)
            fixed = (
                torch.autograd.grad(deterministic, targets, allow_unused=True, retain_graph=True)
                if deterministic.requires_grad
                else [None] * len(targets)
            )
        stochastic = StochasticPart(task, estimator, samples, batch, rebuild)
        direct = [
            target
            for target, used in zip(targets, read_directly(stochastic, leaves, targets), strict=True)
            if used
        ]
        if any(id(target) not in module_names for target in direct):
            raise RuntimeError(
                "f reads a probed tensor that is not a registered parameter of the task, so functional_call "
                "cannot differentiate it"
            )
        direct_values = {f"task.{module_names[id(target)]}": target.detach() for target in direct}

        def one_draw(leaf_values: list[Tensor], swapped: dict[str, Tensor], draw: Tensor) -> Tensor:
            return functional_call(stochastic, swapped, (leaf_values,))

        batched = vmap(
            grad(one_draw, argnums=(0, 1)),
            in_dims=(None, None, 0),
            randomness="different",
            chunk_size=chunk_size,
        )
        with torch.no_grad():  # grad() differentiates regardless; no outer autograd graph is recorded
            leaf_gradients, direct_gradients = batched(
                [leaf.detach() for leaf in leaves], direct_values, torch.zeros(draws)
            )
        # Per probed parameter, the (M, *shape) terms of its gradient, summed straight into the output.
        parts: list[list[Tensor]] = [[] for _ in targets]
        through_encoder = []
        for leaf, gradient in zip(leaves, leaf_gradients, strict=True):
            if id(leaf) in position:
                parts[position[id(leaf)]].append(gradient)
            elif leaf.requires_grad:
                through_encoder.append((leaf, gradient))
        if through_encoder:
            mapped = torch.autograd.grad(
                [leaf for leaf, _ in through_encoder],
                targets,
                grad_outputs=[gradient for _, gradient in through_encoder],
                is_grads_batched=True,
                allow_unused=True,
            )
            for index, gradient in enumerate(mapped):
                if gradient is not None:
                    parts[index].append(gradient)
        for target in direct:
            parts[position[id(target)]].append(direct_gradients[f"task.{module_names[id(target)]}"])
    finally:
        estimator.train(was_training)
    sizes = [target.numel() for target in targets]
    gradients = torch.empty((draws, sum(sizes)), dtype=targets[0].dtype, device=targets[0].device)
    for terms, constant, view in zip(parts, fixed, gradients.split(sizes, dim=1), strict=True):
        if not terms:
            view.zero_()
        for number, term in enumerate(terms):
            view.copy_(term.reshape(draws, -1)) if number == 0 else view.add_(term.reshape(draws, -1))
        if constant is not None:  # the deterministic term: the same in every draw
            view.add_(constant.reshape(1, -1))
    return gradients


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


def probe(
    task: Task, estimator: Estimator, samples: int, draws: int, vectorize: Any = "auto"
) -> dict[str, float]:
    """Run one probe on the task's fixed probe batch; adds ``estimate_time_ms`` (time of one estimate).

    ``vectorize`` (``probe.vectorize``): ``auto`` draws the M estimates in one batched computation where
    ``vectorization_blocker`` finds nothing against it, else with the per-draw loop (logged once per task and
    estimator); ``true`` insists (ConfigError if blocked); ``false`` always loops. ``probe_vectorized`` (1 or
    0) records which path ran, ``probe_time_ms`` the time of the M draws.

    ``estimate_time_ms`` is the time of ONE gradient estimate computed on its own, as in training, whichever
    path drew the M estimates: the loop's time divided by M, or, after a vectorized probe, the median of
    ``TIMED_ESTIMATES`` separately timed single draws (their gradients are discarded). The amortized cost of
    a vectorized draw would rank estimators by how well they vectorize, not by what they cost in training.
    """
    mode = check_vectorize(vectorize, task, estimator)
    batch = task.probe_batch()
    batches = task.probe_batches(draws)  # one data batch per draw, or None: every draw uses ``batch``
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
    start = time.perf_counter()
    if vectorized:
        try:
            gradients = draw_gradients_vectorized(task, estimator, samples, batch, draws)
        except (RuntimeError, NotImplementedError) as error:
            # torch.func refuses some operations (.item(), data-dependent Python control flow, an
            # autograd.Function without a vmap rule); in auto mode the loop computes the same statistics.
            if mode == "true":
                raise
            reason = f"the vectorized draw failed with {type(error).__name__}: {str(error).splitlines()[0]}"
            runtime_blockers[(type(task), type(estimator))] = reason
            report_fallback(task, estimator, reason, logging.WARNING)
            vectorized = False
            start = time.perf_counter()
    if not vectorized:
        gradients = draw_gradients(task, estimator, samples, batch, draws, batches)
    elapsed = time.perf_counter() - start
    estimate_time = elapsed / draws
    if vectorized:
        single = []
        for _ in range(TIMED_ESTIMATES):
            started = time.perf_counter()
            draw_gradients(task, estimator, samples, batch, 1)
            single.append(time.perf_counter() - started)
        estimate_time = statistics.median(single)
    reference = task.reference_gradient(batch)
    stats = gradient_statistics(gradients, flatten(reference) if reference is not None else None)
    stats["estimate_time_ms"] = 1000 * estimate_time
    stats["probe_time_ms"] = 1000 * elapsed
    stats["probe_vectorized"] = float(vectorized)
    return stats
