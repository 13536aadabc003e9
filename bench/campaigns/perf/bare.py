"""The bare-loop baseline: the harness's VAE training step with Gumbel-Softmax, as a plain PyTorch loop.

The harness-overhead goal (a harness step ≤ 1.10× a bare step) compares like with like only if the bare loop
does the same numerical work as ``bench.run.loop.train`` with ``task=vae estimator=gumbel``. So it computes
exactly what the harness computes, in the same order:

- the training batches come from ``bench.run.loop.batch_source`` with a generator seeded with the run's
seed,
  as the runner draws them;
- the logits are the task's encoder's (``task.distribution``), the likelihood is the task's own objective
  ``task.objective(batch)`` (f of the relaxed sample) and the KL is ``bench.tasks.vae.kl_to_uniform``;
- the Gumbel-Softmax relaxation y = softmax((logits + g)/τ), g = −log(−log u), u ~ U(0, 1) clamped as
  ``estimators.base.gumbel_noise`` clamps it, is written out here, with u drawn from torch's global
  generator, as the estimator draws it;
- the optimizer is built by hand (``torch.optim.Adam`` over the task's parameters, or any factory).

Seeded as ``bench.run.runner.run`` seeds a run (``torch.manual_seed(seed)`` before the task is built:
``seeded_setup``), its losses are the harness's losses. What it leaves out is the harness itself: the task
and estimator interfaces, the temperature-schedule hook, the divergence checks, the logging and the probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import Tensor

from bench.run.build import setup
from bench.run.device import synchronizer
from bench.run.loop import batch_source
from bench.tasks.base import Task
from bench.tasks.vae import VAE, kl_to_uniform
from estimators.base import Estimator

OptimizerFactory = Callable[[Iterable[Tensor]], torch.optim.Optimizer]


@dataclass
class BareRun:
    """What the bare loop measured: per step its loss, wall time and optimizer-step time (seconds), and the
    wall time of the whole loop."""

    losses: list[float]
    step_times: list[float]
    optimizer_times: list[float]
    total: float


def seeded_setup(config: DictConfig) -> tuple[Task, Estimator, torch.optim.Optimizer]:
    """Task, estimator and optimizer built as ``bench.run.runner.run`` builds them: torch's global generator
    seeded with ``config.seed`` first (the initialization draws from it), then ``bench.run.build.setup``."""
    torch.manual_seed(config.seed)
    return setup(config)


def bare_vae_steps(
    task: VAE,
    *,
    tau: float,
    samples: int,
    lr: float,
    steps: int,
    seed: int,
    optimizer_factory: OptimizerFactory | None = None,
) -> BareRun:
    """Train ``task`` (a VAE) for ``steps`` steps with Gumbel-Softmax at temperature ``tau``, ``samples``
    relaxed samples per image, and Adam at learning rate ``lr`` (or ``optimizer_factory(parameters)``).

    ``seed`` seeds the data order as the harness seeds it (a generator on the task's device); the noise is
    drawn from torch's global generator, so the caller seeds that (``seeded_setup``) for the harness's losses.
    The step time runs from drawing the batch to the end of the optimizer step, as the harness's
    ``step_time_ms`` does, and on a GPU to the end of the work it queued.
    """
    parameters = list(task.parameters())
    optimizer = optimizer_factory(parameters) if optimizer_factory else torch.optim.Adam(parameters, lr=lr)
    device = parameters[0].device
    synchronize = synchronizer(device)
    next_batch = batch_source(task, torch.Generator(device=device).manual_seed(seed))
    losses: list[float] = []
    step_times: list[float] = []
    optimizer_times: list[float] = []
    clock = time.perf_counter
    loop_started = clock()
    for step in range(1, steps + 1):
        started = clock()
        batch = next_batch(step)
        logits = task.distribution(batch)
        uniform = torch.rand((samples, *logits.shape), dtype=logits.dtype, device=logits.device)
        uniform = uniform.clamp(torch.finfo(logits.dtype).tiny, 1.0 - 1e-7)
        relaxed = ((logits - torch.log(-torch.log(uniform))) / tau).softmax(-1)
        loss = task.objective(batch)(relaxed).mean() + kl_to_uniform(logits).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        losses.append(loss.item())
        optimizer_started = clock()
        optimizer.step()
        synchronize()
        finished = clock()
        step_times.append(finished - started)
        optimizer_times.append(finished - optimizer_started)
    return BareRun(losses, step_times, optimizer_times, clock() - loop_started)
