"""Deterministic costs of one gradient estimate, which no machine load can disturb.

``f_evals``: evaluations of f per gradient estimate for one data point (``Estimator.f_evaluations``: S for
most estimators, C^m for ``exact``, S·(1 + 4n) for ``measure_valued``). ``estimate_flops``: the matrix
multiplication and convolution FLOPs of one estimate's forward and backward on the probe batch, as
``torch.utils.flop_counter.FlopCounterMode`` counts them (0 for a task without such operations: the toy and
Gaussian tasks). Both are measured once, before training, from a stream of random numbers of their own
(forked on the CPU and on every GPU the task uses), so that they change nothing in the run.

What a run costs on its device: ``synchronizer`` (what a timing waits for: a GPU runs its work after the
Python call returns, so a clock read without ``torch.cuda.synchronize`` measures the launch, not the work),
``device_name``, and ``PeakMemory``, the peak memory of one run: on a GPU the peak of
``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats`` at the run's start (tensors
only, not the CUDA context or the allocator's cache); on the CPU the peak resident set size of the process
(``VmHWM`` in ``/proc/self/status``) after it was reset to the current size at the run's start by writing
``5`` to ``/proc/self/clear_refs``, so that the runs of a sweep that share a process each report their own
(it includes what the process held before the run: Python, torch, the data). Null where the system offers
neither.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.tasks.base import Task
from estimators.base import Estimator


def cuda_indices(module: nn.Module) -> list[int]:
    """The GPUs holding a module's parameters or buffers: whose generators a forked stream must fork too."""
    tensors = [*module.parameters(), *module.buffers()]
    return sorted({tensor.device.index or 0 for tensor in tensors if tensor.device.type == "cuda"})


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits until the device has finished the work queued so far (nothing on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def device_name(device: torch.device) -> str | None:
    """The GPU's name, or the CPU's model (``/proc/cpuinfo``, else the platform's); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


class PeakMemory:
    """The peak memory of one run on ``device``, in MiB (module docstring); ``start()`` at the run's start,
    ``megabytes()`` at its end."""

    STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def __init__(self, device: torch.device) -> None:
        self.device, self.available = device, False

    def start(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.available = True
        else:
            try:
                self.CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set size
                self.available = self.resident_peak_kib() is not None
            except OSError:
                self.available = False
        return self

    def megabytes(self) -> float | None:
        if not self.available:
            return None
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = self.resident_peak_kib()
        return None if peak is None else peak / 1024

    def resident_peak_kib(self) -> int | None:
        try:
            found = re.search(r"^VmHWM:\s+(\d+) kB", self.STATUS.read_text(), re.MULTILINE)
        except OSError:
            return None
        return int(found.group(1)) if found else None


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
