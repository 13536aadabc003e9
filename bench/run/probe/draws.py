"""The M gradient estimates of a probe, drawn two ways that give the same statistics.

``draw_gradients`` runs ``task.loss`` M times (the per-draw loop); ``draw_gradients_vectorized`` draws them in
one batched computation with ``torch.func``, because the randomness enters after the encoder: the encoder runs
once and batched vector-Jacobian products carry the M draws through it (``docs/design.md``, "Implementation
notes"), with the per-draw gradients of its linear layers written straight into the draws
(``bench.run.probe.linear``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils import _pytree as pytree

from bench.run.probe import linear
from bench.run.probe.statistics import flatten
from bench.tasks.base import Task
from estimators.base import Estimator

WRT_CHOICES = ("parameters", "distribution")


@dataclass
class Targets:
    """What a probe differentiates with respect to, and how to get the distribution's parameters from them.

    ``wrt="parameters"``: the task's ``probed_parameters()``, with the distribution computed by the task.
    ``wrt="distribution"``: the tensors of the distribution's parameters themselves at the probe batch (the
    encoder's output logits, a Gaussian's mean and log-scale, a quantizer's z_e), detached from the encoder:
    a gradient whose size does not depend on the encoder, as in Liu et al.'s (2023) analysis of ReinMax.
    """

    wrt: str
    tensors: list[Tensor]
    distribution: Callable[[Any], Any]
    are_parameters: bool = True  # the tensors are the probed parameters (toy, gaussian: logits, mean, ...)


def probe_targets(task: Task, batch: Any, wrt: str = "parameters") -> Targets:
    probed = list(task.probed_parameters().values())
    if wrt == "parameters":
        return Targets(wrt, probed, task.distribution)
    with torch.enable_grad():
        leaves, rebuild = split_parameters(task.distribution(batch))
    # The tensors that depend on trainable parameters (an EMA codebook, a buffer, is a constant here).
    trained = [leaf.requires_grad for leaf in leaves]
    detached = [leaf.detach().requires_grad_(grad) for leaf, grad in zip(leaves, trained, strict=True)]
    rebuilt = rebuild(detached)
    tensors = [leaf for leaf, grad in zip(detached, trained, strict=True) if grad]
    originals = [leaf for leaf, grad in zip(leaves, trained, strict=True) if grad]
    same = len(originals) == len(probed) and all(a is b for a, b in zip(originals, probed, strict=True))
    return Targets(wrt, tensors, lambda _batch: rebuilt, same)


def targets_loss(
    task: Task, estimator: Estimator, samples: int, batch: Any, targets: Targets, noise: Any = None
) -> Tensor:
    """The loss whose gradient with respect to ``targets.tensors`` is one estimate (with pre-drawn ``noise``
    for the estimator when given: ``estimators.base.draw_noise``)."""
    if targets.wrt == "parameters" and noise is None:
        return task.loss(estimator, samples, batch)  # honours a task that overrides loss()
    params = targets.distribution(batch)
    surrogate = estimator(
        params, task.objective(batch), samples, **({} if noise is None else {"noise": noise})
    )
    return surrogate.mean() + task.deterministic(params, batch)


def draw_gradients(
    task: Task,
    estimator: Estimator,
    samples: int,
    batch: Any,
    draws: int,
    batches: list[Any] | None = None,
    targets: Targets | None = None,
    noise: Any = None,
) -> Tensor:
    """M gradient estimates of the task's loss with respect to the probe's targets, shape (M, P).

    Every draw uses ``batch``, or draw m uses ``batches[m]`` when given (``Task.probe_batches``). Targets
    default to the probed parameters. ``noise``: pre-drawn noise for the estimator with a leading dimension
    M (``estimators.base.draw_noise(..., draws=M)``); draw m reads its m-th slice (common random numbers).

    The estimator is put in eval mode so that stateful parts (an EMA baseline) are read, not updated.
    """
    targets = targets or probe_targets(task, batch)
    was_training = estimator.training
    estimator.eval()
    try:
        rows = []
        for draw in range(draws):
            with torch.enable_grad():
                loss = targets_loss(
                    task,
                    estimator,
                    samples,
                    batch if batches is None else batches[draw],
                    targets,
                    None if noise is None else pytree.tree_map(lambda value: value[draw], noise),  # noqa: B023
                )
            rows.append(
                flatten(torch.autograd.grad(loss, targets.tensors, allow_unused=True, materialize_grads=True))
            )
    finally:
        estimator.train(was_training)
    return torch.stack(rows)


def deterministic_gradient(task: Task, batch: Any, targets: Targets) -> Tensor | None:
    """The exact gradient of the deterministic terms (a VAE's KL) with respect to the targets, flattened.

    The same in every draw of a probe on one batch. None for a task that overrides ``loss()``: its loss
    cannot be split into the estimated and the deterministic part.
    """
    if type(task).loss is not Task.loss:
        return None
    with torch.enable_grad():
        params = targets.distribution(batch)
        value = task.deterministic(params, batch)
        if not value.requires_grad:
            size = sum(tensor.numel() for tensor in targets.tensors)
            return torch.zeros(size, device=targets.tensors[0].device)
        gradient = torch.autograd.grad(value, targets.tensors, allow_unused=True, materialize_grads=True)
    return flatten(gradient).detach()


def split_parameters(params: Any) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    """The tensors inside distribution parameters and a function that rebuilds them from replacements.

    ``params`` is any pytree of tensors: a tensor (categorical logits), a ``NamedTuple`` of tensors
    (``estimators.Gaussian``, ``estimators.Codebook``), or tuples, lists and dicts of these. Leaves that are
    not tensors are constants, passed through unchanged. Flattening is ``torch.utils._pytree``'s (private in
    every supported torch; namedtuples, tuples, lists and dicts are the node types it has always known, and
    ``tests/run/test_vectorized_probe.py`` guards the calls used here).
    """
    leaves, spec = pytree.tree_flatten(params)
    positions = [index for index, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]

    def rebuild(tensors: list[Tensor]) -> Any:
        replaced = list(leaves)
        for index, tensor in zip(positions, tensors, strict=True):
            replaced[index] = tensor
        return pytree.tree_unflatten(replaced, spec)

    return [leaves[index] for index in positions], rebuild


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

    def forward(self, leaves: list[Tensor], noise: Any = None) -> Tensor:
        given = {} if noise is None else {"noise": noise}  # pre-drawn noise: common random numbers
        return self.estimator(
            self.rebuild(leaves), self.task.objective(self.batch), self.samples, **given
        ).mean()


def read_directly(stochastic: StochasticPart, leaves: list[Tensor], targets: list[Tensor]) -> list[bool]:
    """Which probed parameters f reads other than through the distribution parameters (one trial draw).

    A target is read when its gradient node is reachable from the trial value's graph, which is what
    ``autograd.grad(value, targets, allow_unused=True)`` answers with a gradient rather than None, found
    without the backward pass (for targets that are not leaves, the backward pass answers).
    """
    with torch.enable_grad():
        trial = [leaf.detach().requires_grad_(leaf.requires_grad) for leaf in leaves]
        value = stochastic(trial)
        if not value.requires_grad:
            return [False] * len(targets)
        if not all(target.is_leaf for target in targets):
            used = torch.autograd.grad(value, targets, allow_unused=True)
            return [gradient is not None for gradient in used]
    reached = graph_leaves(value.grad_fn)
    return [id(target) in reached for target in targets]


def graph_leaves(node: Any) -> set[int]:
    """The ids of the leaf tensors whose gradients the autograd graph below ``node`` accumulates."""
    found, seen, stack = set(), set(), [node]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            found.add(id(variable))
        stack.extend(child for child, _ in node.next_functions)
    return found


class Draws(NamedTuple):
    """The M gradient estimates (M, P) and the flattened exact gradient of the deterministic terms (P,), the
    same in every draw and already part of every row (None where the loss cannot be split)."""

    gradients: Tensor
    deterministic: Tensor | None


def draw_gradients_vectorized(
    task: Task,
    estimator: Estimator,
    samples: int,
    batch: Any,
    draws: int,
    chunk_size: int | None = None,
    targets: Targets | None = None,
    noise: Any = None,
) -> Tensor:
    """The same M estimates as ``draw_gradients`` (shape (M, P)), drawn in one batched computation.

    The randomness enters after the encoder (``docs/design.md``, "Implementation notes"), so:

    1. ``params = task.distribution(batch)`` is computed once, with its autograd graph to the probed
       parameters; the deterministic term's gradient is the same in every draw and is computed once;
    2. the M gradients of ``estimator(params, f, S)`` with respect to the tensors of ``params`` (and to
       probed parameters that f reads directly, through ``functional_call``) come from
       ``vmap(grad(.), randomness="different")``: every draw gets its own noise from the global generator;
    3. one batched vector-Jacobian product (``autograd.grad(..., is_grads_batched=True)``) maps them back
       through the encoder to the probed parameters, stopping at the outputs of ``nn.Linear`` layers, whose
       per-draw weight and bias gradients one batched product per layer writes into the draws
       (``bench.run.probe.linear``). Where the distribution parameters ARE the probed parameters (``toy``,
       ``gaussian``) that map is the identity and is skipped.

    The estimator is in eval mode, so an EMA baseline is read, not updated. This assumes that
    ``task.distribution`` is deterministic; a task whose encoder is random declares ``vectorizable = False``.
    ``chunk_size`` bounds memory by vectorizing that many draws at a time. ``noise``: pre-drawn noise for
    the estimator with a leading dimension M (``estimators.base.draw_noise(..., draws=M)``), passed to
    ``vmap`` as a batched argument, so that draw m reads its m-th slice (common random numbers); whatever
    else the estimator draws still comes from the global generator. ``vectorized_draws`` returns the
    deterministic term's gradient beside them.
    """
    return vectorized_draws(task, estimator, samples, batch, draws, chunk_size, targets, noise).gradients


def vectorized_draws(
    task: Task,
    estimator: Estimator,
    samples: int,
    batch: Any,
    draws: int,
    chunk_size: int | None = None,
    targets: Targets | None = None,
    noise: Any = None,
) -> Draws:
    """``draw_gradients_vectorized``'s draws and the deterministic term's gradient it computed on the way
    (what ``deterministic_gradient`` returns), so that a probe need not compute it again.

    The deterministic term's gradient with respect to the distribution's tensors is added to every draw's
    gradient there, so that the batched vector-Jacobian product carries it to the probed parameters with the
    draws (J^T(h_m + k) = J^T h_m + J^T k). The probed parameters of ``nn.Linear`` layers get their per-draw
    gradients from one batched product per layer written straight into the draws
    (``bench.run.probe.linear``), the others from autograd's batched product.
    """
    probed = targets or probe_targets(task, batch)
    targets = probed.tensors
    position = {id(target): index for index, target in enumerate(targets)}
    module_names = {id(parameter): name for name, parameter in task.named_parameters(remove_duplicate=False)}
    sizes = [target.numel() for target in targets]
    gradients = torch.empty((draws, sum(sizes)), dtype=targets[0].dtype, device=targets[0].device)
    views = list(gradients.split(sizes, dim=1))
    was_training = estimator.training
    estimator.eval()
    try:
        with torch.enable_grad(), linear.recording(linear.linear_layers(task.modules(), targets)) as calls:
            params = probed.distribution(batch)
        with torch.enable_grad():
            leaves, rebuild = split_parameters(params)
            fixed, at_leaves, beside = deterministic_parts(task, batch, params, leaves, rebuild, targets)
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

        def one_draw(leaf_values: list[Tensor], swapped: dict[str, Tensor], draw: Any) -> Tensor:
            return functional_call(stochastic, swapped, (leaf_values, None if noise is None else draw))

        batched = vmap(
            grad(one_draw, argnums=(0, 1)),
            in_dims=(None, None, 0),
            randomness="different",
            chunk_size=chunk_size,
        )
        with torch.no_grad():  # grad() differentiates regardless; no outer autograd graph is recorded
            leaf_gradients, direct_gradients = batched(
                [leaf.detach() for leaf in leaves],
                direct_values,
                torch.zeros(draws, device=targets[0].device) if noise is None else noise,
            )
        # Per probed parameter, the (M, *shape) terms of its gradient and the constants (the same in every
        # draw) to add; ``written``: its columns already hold a term (bench.run.probe.linear).
        parts: list[list[Tensor]] = [[] for _ in targets]
        constants: list[list[Tensor]] = [[] if value is None else [value] for value in beside]
        written = [False] * len(targets)
        through_encoder = []
        for leaf, gradient, constant in zip(leaves, leaf_gradients, at_leaves, strict=True):
            if id(leaf) in position:
                parts[position[id(leaf)]].append(gradient)
                constants[position[id(leaf)]] += [] if constant is None else [constant]
            elif leaf.requires_grad:
                through_encoder.append((leaf, gradient if constant is None else gradient + constant))
        if through_encoder:
            roots = [leaf for leaf, _ in through_encoder]
            chosen = linear.direct_calls(calls, roots, targets)
            covered = {
                id(parameter): views[position[id(parameter)]]
                for call in chosen
                for parameter in (call.module.weight, call.module.bias)
                if parameter is not None and id(parameter) in position
            }
            others = [target for target in targets if id(target) not in covered]
            mapped = torch.autograd.grad(
                roots,
                [call.output for call in chosen] + others,
                grad_outputs=[gradient for _, gradient in through_encoder],
                is_grads_batched=True,
                allow_unused=True,
            )
            for call, cotangent in zip(chosen, mapped[: len(chosen)], strict=True):
                linear.write_gradients(call, cotangent, covered)
            for target in targets:
                written[position[id(target)]] = id(target) in covered
            for target, gradient in zip(others, mapped[len(chosen) :], strict=True):
                if gradient is not None:
                    parts[position[id(target)]].append(gradient)
        for target in direct:
            parts[position[id(target)]].append(direct_gradients[f"task.{module_names[id(target)]}"])
    finally:
        estimator.train(was_training)
    for view, terms, added, done in zip(views, parts, constants, written, strict=True):
        fill(view, [term.reshape(draws, -1) for term in terms], added, done)
    deterministic = torch.cat(
        [
            torch.zeros(size, dtype=gradients.dtype, device=gradients.device)
            if value is None
            else value.reshape(-1)
            for value, size in zip(fixed, sizes, strict=True)
        ]
    )
    return Draws(gradients, deterministic.detach())


def deterministic_parts(
    task: Task, batch: Any, params: Any, leaves: list[Tensor], rebuild: Callable, targets: list[Tensor]
) -> tuple[list[Tensor | None], list[Tensor | None], list[Tensor | None]]:
    """The deterministic term's gradients, each the same in every draw: with respect to the targets (what
    ``deterministic_gradient`` returns), with respect to the distribution's tensors (``leaves``: added to
    the draws' cotangents there), and with respect to the targets other than through those tensors (a learned
    prior's logits, say: added to the draws as a constant). None where a gradient is zero."""
    nothing = [None] * len(targets), [None] * len(leaves), [None] * len(targets)
    value = task.deterministic(params, batch)
    if not value.requires_grad:
        return nothing
    fixed = list(torch.autograd.grad(value, targets, allow_unused=True, retain_graph=True))
    cut = [leaf.detach().requires_grad_(leaf.requires_grad) for leaf in leaves]
    again = task.deterministic(rebuild(cut), batch)
    if not again.requires_grad:
        return fixed, nothing[1], nothing[2]
    varying = [tensor for tensor in cut if tensor.requires_grad]
    found = torch.autograd.grad(again, varying + targets, allow_unused=True)
    at_cut = dict(zip((id(tensor) for tensor in varying), found[: len(varying)], strict=True))
    return fixed, [at_cut.get(id(tensor)) for tensor in cut], list(found[len(varying) :])


def fill(view: Tensor, terms: list[Tensor], constants: list[Tensor], written: bool) -> None:
    """Sum ``terms`` (each (M, n)) and ``constants`` (each of n entries, the same in every draw) into ``view``
    (M, n), in one pass where it can be, on top of what it holds when ``written``."""
    constant = None
    for value in constants:
        constant = value.reshape(1, -1) if constant is None else constant + value.reshape(1, -1)
    if not written and not terms:
        view.zero_() if constant is None else view.copy_(constant.expand_as(view))
        return
    if not written:
        first, terms = terms[0], terms[1:]
        view.copy_(first) if constant is None else torch.add(first, constant, out=view)
    elif constant is not None:
        view.add_(constant)
    for term in terms:
        view.add_(term)
