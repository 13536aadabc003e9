"""Probing every member of a study at one checkpoint: the estimator's state fixed, common random numbers,
one batched pass per estimator, one reference gradient shared by all.

At a checkpoint (the task's parameters loaded from it, frozen):

1. the reference gradient g* of the probe batch and the exact gradient of the deterministic terms are
   computed once and shared by every estimator;
2. the noise of the M draws is drawn once, for the largest S of any member, from a generator seeded by the
   run's seed and the step (``estimators.base.draw_noise``); a member with S samples reads the first S
   (``take_samples``), so that every estimator's draw m sees the same uniforms behind D = argmax(θ + G(U));
3. each member's state is fixed at the checkpoint (``prepare``): τ is its schedule's value at the step, a
   stateful part (an EMA baseline) starts from the estimator's initial state and is warmed up on the probe
   batch without any parameter update, and trainable parameters of the estimator's own (REBAR, RELAX) are
   fitted at the checkpoint (``fit_estimator_parameters``);
4. its M draws come from one vectorized pass (``bench.run.probe.draws.draw_gradients_vectorized``, the noise a
   batched argument), or the per-draw loop where the task or the estimator cannot be vectorized.
"""

from __future__ import annotations

import copy
import inspect
import math
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from bench.campaigns.same_point.paired import DrawNorms, draw_norms
from bench.campaigns.same_point.roster import Member
from bench.run.probe import reference_gradient, vectorization_blocker
from bench.run.probe.draws import (
    Targets,
    deterministic_gradient,
    draw_gradients,
    draw_gradients_vectorized,
    split_parameters,
)
from bench.run.probe.statistics import gradient_statistics
from bench.tasks.base import Task
from estimators.base import Estimator, EstimatorError, Noise, draw_noise, take_samples

SEED_STRIDE = 1_000_003  # seeds of the study's streams: seed · stride + step (+ a per-estimator offset)
NOISE_OFFSET = 7_919  # the shared noise's generator: distinct from the training run's probe stream


@dataclass
class Reference:
    """The checkpoint's reference: g* (or the N draws of a Monte-Carlo reference) and the deterministic
    terms' exact gradient, flattened; all None where the task has none."""

    gradient: Tensor | None
    draws: Tensor | None
    deterministic: Tensor | None

    @property
    def mean(self) -> Tensor | None:
        return self.draws.double().mean(0) if self.draws is not None else self.gradient


@dataclass
class Measured:
    """One member's probe at a checkpoint: its statistics (``bench.formats.contract.PROBE_FIELDS`` and the
    study's own) and the per-draw norms the paired statistics need."""

    member: Member
    statistics: dict[str, float]
    norms: DrawNorms


def devices_of(task: Task) -> list[int]:
    """The CUDA devices the task's parameters are on: their generators are forked with the CPU's."""
    return sorted({p.device.index or 0 for p in task.parameters() if p.device.type == "cuda"})


def stream_seed(seed: int, step: int, name: str = "") -> int:
    """A seed of its own for (run seed, checkpoint step, estimator name); stable whatever else is probed."""
    return (seed * SEED_STRIDE + step * 1_009 + zlib.crc32(name.encode())) % 2**63


def checkpoint_reference(task: Task, batch: Any, targets: Targets, seed: int, step: int) -> Reference:
    """The reference gradient of the probe batch at the current parameters, computed once per checkpoint."""
    deterministic = deterministic_gradient(task, batch, targets)
    kind = getattr(task, "reference", "none")
    if kind == "monte_carlo":
        from bench.run.probe.reference import (
            monte_carlo_reference,  # only tasks with such a reference need it
        )

        reference = monte_carlo_reference(
            task, batch, targets, int(task.reference_draws), stream_seed(seed, step, "reference")
        )
        return Reference(None, reference.draws, deterministic)
    return Reference(reference_gradient(task, batch, targets), None, deterministic)


def checkpoint_noise(params: Any, samples: int, draws: int, seed: int, step: int) -> Noise | None:
    """The shared noise of the M draws at a checkpoint (None where the latent kind has no noise streams)."""
    leaves, rebuild = split_parameters(params)
    detached = rebuild([leaf.detach() for leaf in leaves])
    generator = torch.Generator(device=leaves[0].device).manual_seed(stream_seed(seed, step + NOISE_OFFSET))
    try:
        return draw_noise(detached, samples, draws, generator)
    except EstimatorError:  # e.g. a codebook: its estimators draw their own noise
        return None


def takes_noise(estimator: Estimator) -> bool:
    """Whether the estimator's forward accepts pre-drawn noise (``noise=``)."""
    return "noise" in inspect.signature(estimator.forward).parameters


def prepare(
    member: Member,
    initial_state: dict[str, Tensor],
    task: Task,
    batch: Any,
    step: int,
    study: DictConfig,
    seed: int,
) -> dict[str, float]:
    """Fix the member's state at the checkpoint: τ at ``step``, an EMA baseline warmed up from the
    estimator's initial state, parameters of its own fitted. Returns what it did, for ``study.csv``."""
    estimator = member.estimator
    estimator.load_state_dict(initial_state)
    estimator.on_step(step)  # a temperature schedule's value at this step (constant τ: unchanged)
    done: dict[str, float] = {}
    if getattr(estimator, "tau", None) is not None:
        done["tau"] = float(estimator.tau)
    warmup = int(study.get("warmup", 100))
    if warmup and any(True for _ in estimator.buffers()):
        with torch.random.fork_rng(devices=devices_of(task)), torch.no_grad():
            torch.manual_seed(stream_seed(seed, step, f"warmup/{member.name}"))
            params = task.distribution(batch)
            objective = task.objective(batch)
            estimator.train()  # training mode: a stateful part (an EMA baseline) updates itself
            for _ in range(warmup):
                estimator(params, objective, member.samples)
        done["warmup_calls"] = float(warmup)
    steps = int(study.get("variance_steps", 100))
    with torch.random.fork_rng(devices=devices_of(task)):
        torch.manual_seed(stream_seed(seed, step, f"variance/{member.name}"))
        fitted = fit_estimator_parameters(
            estimator, task, batch, member.samples, steps, float(study.get("variance_lr", 1e-3))
        )
    if fitted:
        done["variance_steps"] = float(fitted)
    estimator.eval()
    return done


def fit_estimator_parameters(
    estimator: Estimator, task: Task, batch: Any, samples: int, steps: int, lr: float
) -> int:
    """Train the estimator's own parameters at the checkpoint for ``steps`` steps; the task's are untouched.

    For estimators with trainable parameters of their own (a control variate's: REBAR, Tucker et al. 2017;
    RELAX, Grathwohl et al. 2018). Each step minimizes the single-sample proxy of the estimate's variance,
    ‖ĝ‖² with ĝ the estimate's gradient with respect to the distribution's parameters at the probe batch
    (Grathwohl et al. 2018, §3.3: for an unbiased estimator E‖ĝ‖² = tr Σ + ‖∇L‖², whose second term does
    not depend on the estimator's parameters), with the estimator's own ``optimizer`` where it has one (a
    callable ``estimator.optimizer(parameters)``), else Adam with learning rate ``lr``. Returns the steps
    taken (0: nothing to train).

    The fit starts from the estimator's initial state at every checkpoint (its network built by
    ``initial_states``), not from a training run's: a study's trajectory is trained by another estimator. With
    the configured optimizer (``conf/estimator/rebar.yaml``, ``relax.yaml``: Adam, learning rate 1e-3) and
    ``study.variance_steps`` = 100 this is a brief fit: η and λ move by at most about 0.1, so rebar and relax
    are measured near their initial control variates (relax's network output starts at 0); raise
    ``study.variance_steps`` or the estimator's ``optimizer.lr`` for a fuller fit.
    """
    own = [parameter for parameter in estimator.parameters() if parameter.requires_grad]
    if not own or steps <= 0:
        return 0
    make = getattr(estimator, "optimizer", None)
    optimizer = make(own) if callable(make) else torch.optim.Adam(own, lr=lr)
    with torch.no_grad():
        leaves, rebuild = split_parameters(task.distribution(batch))
    estimator.train()
    for _ in range(steps):
        with torch.enable_grad():
            targets = [leaf.detach().requires_grad_(True) for leaf in leaves]
            surrogate = estimator(rebuild(targets), task.objective(batch), samples).sum()
            estimate = torch.autograd.grad(surrogate, targets, create_graph=True)
            proxy = sum((gradient**2).sum() for gradient in estimate)
            gradients = torch.autograd.grad(proxy, own, allow_unused=True)
        for parameter, gradient in zip(own, gradients, strict=True):
            parameter.grad = gradient
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps


def draw_member(
    task: Task,
    member: Member,
    batch: Any,
    draws: int,
    targets: Targets,
    noise: Noise | None,
    seed: int,
    step: int,
) -> tuple[Tensor, dict[str, float]]:
    """The member's M draws, (M, P), with common random numbers where it takes them; and how they were
    drawn (``probe_vectorized``, ``common_random_numbers``)."""
    estimator = member.estimator
    shared = noise is not None and takes_noise(estimator)
    given = take_samples(noise, member.samples, leading=1) if shared else None
    batches = task.probe_batches(draws)  # a batch per draw (no reference: the spread across data)
    vectorized = vectorization_blocker(task, estimator) is None and batches is None
    with torch.random.fork_rng(devices=devices_of(task)):
        # The estimator's own draws (Gumbel-Rao's conditional Gumbels, and all of them where it takes no
        # noise) come from a stream of the estimator's own.
        torch.manual_seed(stream_seed(seed, step, member.name))
        gradients = None
        if vectorized:
            try:
                gradients = draw_gradients_vectorized(
                    task, estimator, member.samples, batch, draws, targets=targets, noise=given
                )
            except (RuntimeError, NotImplementedError):  # torch.func refused an operation: the loop instead
                vectorized = False
        if gradients is None:
            gradients = draw_gradients(task, estimator, member.samples, batch, draws, batches, targets, given)
    return gradients, {"probe_vectorized": float(vectorized), "common_random_numbers": float(shared)}


def measure(
    task: Task,
    member: Member,
    batch: Any,
    draws: int,
    targets: Targets,
    reference: Reference,
    noise: Noise | None,
    seed: int,
    step: int,
) -> Measured:
    """One member's probe at the checkpoint: draws, the probe statistics against the shared reference, and
    the per-draw norms."""
    gradients, how = draw_member(task, member, batch, draws, targets, noise, seed, step)
    statistics = gradient_statistics(
        gradients, reference.gradient, reference.deterministic, reference_draws=reference.draws
    )
    norms = draw_norms(gradients, reference.mean)
    if norms.squared_errors is not None:
        statistics["grad_mse_se"] = float(norms.squared_errors.std(ddof=1) / math.sqrt(draws))
    statistics["f_evals"] = float(member.f_evals) if member.f_evals is not None else math.nan
    statistics.update(how)
    return Measured(member, statistics, norms)


def initial_states(
    members: list[Member], task: Task | None = None, params: Any = None, objective: Any = None
) -> list[dict[str, Tensor]]:
    """Each member's state before any checkpoint: every checkpoint starts from it (no carry-over).

    With ``task``, ``params`` and ``objective`` (the first checkpoint's), an estimator with parameters of its
    own is called once first (no gradient, the global generator forked), so that a part it sizes at its first
    call (RELAX's network) exists in the state every checkpoint starts from."""
    for member in members:
        if task is not None and member.estimator.own_parameters():
            with torch.random.fork_rng(devices=devices_of(task)), torch.no_grad():
                member.estimator(params, objective, member.samples)
    return [copy.deepcopy(member.estimator.state_dict()) for member in members]
