"""Deterministic costs of one gradient estimate, which no machine load can disturb.

``f_evals``: evaluations of f per gradient estimate for one data point (``Estimator.f_evaluations``: S for
most estimators, C^m for ``exact``, S·(1 + 4n) for ``measure_valued``). ``estimate_flops``: the matrix
multiplication and convolution FLOPs of one estimate's forward and backward on the probe batch, as
``torch.utils.flop_counter.FlopCounterMode`` counts them (0 for a task without such operations: the toy and
Gaussian tasks). Both are measured once, before training, from a stream of random numbers of their own
(forked on the CPU and on every GPU the task uses), so that they change nothing in the run. What a run costs
on its device (time, memory) is ``bench.run.device``'s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.run.device import cuda_indices
from bench.tasks.base import Task
from estimators.base import Estimator


def deterministic_costs(task: Task, estimator: Estimator, samples: int) -> dict[str, Any]:
    batch = task.probe_batch()
    parameters = [parameter for parameter in task.parameters() if parameter.requires_grad]
    saved: list = [parameter.grad for parameter in parameters]
    was_training = estimator.training
    estimator.eval()  # an EMA baseline is read, not updated
    try:
        with torch.random.fork_rng(devices=cuda_indices(task)):
            torch.manual_seed(0)
            f_evals = None
            if type(task).loss is Task.loss:  # a task that overrides loss() has no separate f to count
                with torch.no_grad():
                    params = task.distribution(batch)
                f_evals = int(estimator.f_evaluations(params, task.objective(batch), samples))
            with FlopCounterMode(display=False) as counter:
                # backward(), not autograd.grad(): the counter's module hooks refuse the latter on leaves.
                task.loss(estimator, samples, batch).backward()
    finally:
        estimator.train(was_training)
        for parameter, grad in zip(parameters, saved, strict=True):
            parameter.grad = grad
    return {"f_evals": f_evals, "estimate_flops": int(counter.get_total_flops())}
