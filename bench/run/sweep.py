"""Sweep helpers: resuming a sweep into the same folder, and torch threads under a parallel launcher or in a
SLURM job.

No scheduler of our own: Hydra's joblib launcher runs jobs on the local cores, its submitit launcher on a
SLURM cluster (``submitit_local`` runs the same path on one machine). Under the joblib launcher the jobs
spread over the visible GPUs (``parallel_job_number``, ``bench.run.device.resolve_device``); under submitit
each job gets the GPUs SLURM gives it (``hydra.launcher.gpus_per_node``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bench.formats.contract import NOT_PART_OF_THE_CONFIGURATION, NOT_PART_OF_THE_RUN, OK, SUMMARY_FILE


def without(node: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``node`` without the dotted ``keys`` (``task.report`` removes ``report`` from ``node["task"]``); a
    node that the removal leaves empty goes too (``checkpoint.steps`` and ``checkpoint.every`` take
    ``checkpoint`` with them), so that a config without those keys has the same digest."""
    for key in keys:
        *parents, last = key.split(".")
        chain = [node]
        for name in parents:
            chain.append(chain[-1].get(name) if isinstance(chain[-1], dict) else None)
        if not isinstance(chain[-1], dict) or last not in chain[-1]:
            continue
        chain[-1].pop(last)
        for depth in range(len(parents) - 1, -1, -1):  # chain[depth + 1] is chain[depth][parents[depth]]
            if chain[depth + 1]:
                break
            chain[depth].pop(parents[depth])
    return node


def device_kind(value: Any) -> str:
    """``cpu`` or ``cuda``: the kind of device ``device=value`` runs on here (``auto`` asks torch); the value
    itself where it names no device (the run refuses it)."""
    text = "auto" if value is None else str(value).strip().lower()
    if text == "auto":
        import torch  # here only: the process that dispatches a joblib sweep never imports torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return text.split(":")[0] if text == "cpu" or text == "cuda" or text.startswith("cuda:") else text


def by_device_kind(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``device`` replaced by the kind of device (a GPU's number does not change what a
    run computes) and left out for the CPU, so that a CPU run keeps the digest it had before the key
    existed, whether it says ``device=cpu`` or ``auto``."""
    if "device" in node:
        kind = device_kind(node.pop("device"))
        if kind != "cpu":
            node["device"] = kind
    return node


def config_digest(config: DictConfig) -> str:
    """A fingerprint of what a run computes: its resolved config without display and scheduling keys, the
    device as its kind (``by_device_kind``)."""
    node = by_device_kind(without(OmegaConf.to_container(config, resolve=True), NOT_PART_OF_THE_RUN))
    return hashlib.sha256(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:16]


def variant_digest(config: DictConfig) -> str:
    """A fingerprint of a configuration up to its seed: runs that differ only in the seed share it.

    Taken over the config as written (interpolations such as ``task.seed: ${seed}`` unresolved), without
    the top-level ``seed`` and the display and scheduling keys. Reports use it to tell apart configurations
    whose overrides look alike (settings that came from an experiment file, a changed default).
    """
    node = OmegaConf.to_container(config, resolve=False)
    node = by_device_kind(without(node, NOT_PART_OF_THE_CONFIGURATION))
    return hashlib.sha256(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_summary(directory: Path, config: DictConfig) -> dict[str, Any] | None:
    """The run's summary if ``directory`` already holds a complete ``ok`` run of this same config, else None.

    Files are written atomically, so a summary that parses is complete; anything else (no summary, a
    failed, diverged or skipped run, an unreadable file, a run of a different config) means the run is to
    be done again.
    """
    try:
        summary = json.loads((directory / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != OK:
        return None
    return summary if summary.get("config_digest") == config_digest(config) else None


def parallel_job_number() -> int | None:
    """The job's number in a sweep that Hydra's joblib launcher runs (several jobs at once on one machine),
    else None: what spreads ``device=auto`` and ``device=cuda`` over the visible GPUs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    launcher = str(OmegaConf.select(hydra, "launcher._target_", default="") or "")
    if hydra.mode != RunMode.MULTIRUN or "joblib" not in launcher.lower():
        return None
    return int(hydra.job.num)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def launcher_threads(launcher: DictConfig | None) -> int | None:
    """Torch threads per job so that parallel jobs × threads do not exceed the cores (None: leave as is).

    Under Hydra's joblib launcher ``n_jobs`` jobs run at once (joblib's convention: -1 is every core, -2
    all but one, ...); each then gets ``cores // n_jobs`` threads, at least one.
    """
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")).lower():
        return None
    cores = available_cores()
    jobs = int(launcher.get("n_jobs") or -1)
    if jobs < 0:
        jobs = max(1, cores + 1 + jobs)
    return max(1, cores // jobs)


LAUNCHED = False  # in the process that dispatches a sweep: Hydra has started launching its runs


class SweepLaunched(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): the sweep got past its configuration and
    is launching its runs. ``python -m bench`` then reports a later failure of the sweep (a joblib worker
    killed) as such, not as bad input (exit code 1, not 2)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global LAUNCHED
        LAUNCHED = True


def allocation_threads(environment: dict[str, str] | None = None) -> int | None:
    """Torch threads inside a SLURM job (``SLURM_JOB_ID`` set): the CPUs allocated to its task,
    ``SLURM_CPUS_PER_TASK``, else the CPU affinity mask SLURM gave the process; None outside SLURM.

    Torch's own default counts the machine's cores, not the allocation: a job given one CPU of a
    two-core node would otherwise run two threads on it.
    """
    environment = os.environ if environment is None else environment
    if not environment.get("SLURM_JOB_ID"):
        return None
    try:
        return max(1, int(environment.get("SLURM_CPUS_PER_TASK", "")))
    except ValueError:  # not set (no --cpus-per-task) or not a number
        return available_cores()
