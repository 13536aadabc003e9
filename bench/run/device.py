"""Where a run computes, and what that costs: the one device module.

``resolve_device`` / ``run_device``: the torch device ``device=`` names on this machine (``auto``, ``cpu``,
``cuda``, ``cuda:N``; under a parallel launcher ``auto`` and ``cuda`` spread the jobs over the visible GPUs).
``synchronizer``: what a timing waits for (a GPU runs its work after the Python call returns, so a clock
read without ``torch.cuda.synchronize`` measures the launch, not the work). ``device_name``, and
``PeakMemory``, the peak memory of one run: on a GPU the peak of ``torch.cuda.max_memory_allocated`` after
``torch.cuda.reset_peak_memory_stats`` at the run's start (tensors only, not the CUDA context or the
allocator's cache); on the CPU the peak resident set size of the process (``VmHWM`` in
``/proc/self/status``) after it was reset to the current size at the run's start by writing ``5`` to
``/proc/self/clear_refs``, so that the runs of a sweep that share a process each report their own (it
includes what the process held before the run: Python, torch, the data). Null where the system offers
neither. ``cuda_indices``: the GPUs a module lives on (whose generators a forked random stream forks too).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from bench.formats.errors import ConfigError
from bench.run.sweep import parallel_job_number

DEVICES = "auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N (the GPU numbered N)"


def resolve_device(value: Any, job: int | None = None) -> torch.device:
    """The torch device ``device=value`` names on this machine; ConfigError if it is not one or not here.

    ``auto``: the GPU when torch sees one, else the CPU. ``cuda`` without a number: the current GPU, or under
    a parallel launcher (``job``, the job's number: ``bench.run.sweep.parallel_job_number``) GPU ``job``
    modulo the number of GPUs visible, so that the jobs running at once spread over them; ``auto`` does the
    same when there is a GPU. ``cuda:N`` is that GPU, whatever the launcher.
    """
    text = "auto" if value is None else str(value).strip().lower()
    form = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", text)
    if form is None:
        raise ConfigError(f"device must be {DEVICES}; got device={value!r}.")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = (
            f"this torch ({torch.__version__}) was built without CUDA"
            if torch.version.cuda is None
            else f"torch (CUDA {torch.version.cuda}) finds no GPU: check nvidia-smi and CUDA_VISIBLE_DEVICES"
        )
        raise ConfigError(
            f"device={text}, but there is no GPU to run on: {why}. Run on the CPU with device=cpu, or with "
            "device=auto, which takes a GPU where there is one."
        )
    count = torch.cuda.device_count()
    if form.group(1) is not None:
        index = int(form.group(1))
        if index >= count:
            raise ConfigError(
                f"device={text}, but torch sees {count} GPU{'s' if count > 1 else ''} (cuda:0 to "
                f"cuda:{count - 1}; CUDA_VISIBLE_DEVICES renumbers them). Choose one of those, or "
                "device=cuda."
            )
        return torch.device("cuda", index)
    return torch.device("cuda", job % count if job is not None else torch.cuda.current_device())


def run_device(config: DictConfig) -> torch.device:
    """The device of the run ``config`` describes (``device``, default ``auto``), on this machine."""
    return resolve_device(config.get("device", "auto"), parallel_job_number())


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
