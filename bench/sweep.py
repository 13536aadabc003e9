"""Sweep helpers: resuming a sweep into the same folder, and torch threads under a parallel launcher.

No scheduler of our own: Hydra's joblib launcher runs jobs on the local cores, its submitit launcher on a
SLURM cluster (``submitit_local`` runs the same path on one machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def finished_summary(directory: Path) -> dict[str, Any] | None:
    """The run's summary if ``directory`` already holds a complete run with status ``ok``, else None.

    Files are written atomically, so a summary that parses is complete; anything else (no summary, a
    failed, diverged or skipped run, an unreadable file) means the run is to be done again.
    """
    try:
        summary = json.loads((directory / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "ok" else None


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
