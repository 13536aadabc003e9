"""Sweep helpers: the run folders of a sweep, resuming a sweep into the same folder, and torch threads under a
parallel launcher or in a SLURM job.

A sweep's run folder (``hydra.sweep.subdir``, ``conf/config.yaml``) is named by ``run_folder_name``: the keys
that vary in the sweep with their values (each cut to ``VALUE_LIMIT`` characters), then ``@`` and 8 hex
digits of the sha256 of the run's full overrides, made safe by ``bench.formats.names.safe_name`` and never
longer than 120 characters: ``estimator=rloo,seed=0@1f0c2a9e``. The full overrides stay in the folder's
``.hydra/overrides.yaml``. ``SweepLaunched`` tells each run which keys vary (``hydra.sweep.subdir``
re-set to ``${run_folder:KEYS}``); the resolver ``run_folder`` names the folder. A re-run finds a finished
run in its own folder, in another folder of the same overrides (``...@<same digest>``, when other keys
varied), or in the folder Hydra's ``override_dirname`` named before (``estimator=rloo,seed=0``), and skips it
(``finished_elsewhere``).

No scheduler of our own: Hydra's joblib launcher runs jobs on the local cores, its submitit launcher on a
SLURM cluster (``submitit_local`` runs the same path on one machine). Under the joblib launcher the jobs
spread over the visible GPUs (``parallel_job_number``, ``bench.run.device.resolve_device``); under submitit
each job gets the GPUs SLURM gives it (``hydra.launcher.gpus_per_node``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bench.formats.contract import NOT_PART_OF_THE_CONFIGURATION, NOT_PART_OF_THE_RUN, OK, SUMMARY_FILE
from bench.formats.names import LIMIT, safe_name
from bench.formats.progress import duration, time_left


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
SUBDIR = "${run_folder:}"
"""``hydra.sweep.subdir`` as ``conf/config.yaml`` sets it; ``SweepLaunched`` adds the keys that vary."""


class SweepLaunched(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): the sweep got past its configuration and
    is launching its runs. ``python -m bench`` then reports a later failure of the sweep (a joblib worker
    killed) as such, not as bad input (exit code 1, not 2).

    It also names the keys that vary in the sweep for the run folders: Hydra composes every run again from
    the sweep's own overrides of its config (``hydra.overrides.hydra``), so one more there,
    ``hydra.sweep.subdir=${run_folder:'KEY,KEY'}``, reaches every run, in this process or a launcher's
    workers. A ``hydra.sweep.subdir`` of the user's own is left alone."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global LAUNCHED
        LAUNCHED = True
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params, resolve=False) if params else {}
        # A key given on the command line replaces the same key of the sweeper's params (Hydra's rule): it
        # counts once (a 12-run sweep over an experiment whose params sweep 60 runs said "of 60").
        given = list(config.hydra.overrides.task)
        keys = {override.split("=", 1)[0].lstrip("+~") for override in given}
        swept = [*given, *(f"{key}={value}" for key, value in params.items() if key not in keys)]
        added = [f"+hydra.job.env_set.{SWEEP_STARTED}={time.time():.3f}"]
        size = sweep_size(swept)
        if size is not None:
            added.append(f"+hydra.job.env_set.{SWEEP_SIZE}={size}")
        if OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") == SUBDIR:
            added.append(f"hydra.sweep.subdir=${{run_folder:'{','.join(swept_keys(swept))}'}}")
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.hydra.extend(added)


# ---- Progress ------------------------------------------------------------------------------------------

SWEEP_SIZE, SWEEP_STARTED = "GRADBENCH_SWEEP_SIZE", "GRADBENCH_SWEEP_STARTED"
"""What ``SweepLaunched`` tells each run of a sweep (``hydra.job.env_set``): the number of runs and when the
sweep started (seconds since the epoch)."""


def sweep_size(overrides: Iterable[str]) -> int | None:
    """The number of runs of a sweep's overrides (the product of each sweep's number of values); None when a
    glob makes it unknown here."""
    size = 1
    for override in parsed(overrides):
        if override.is_sweep_override():
            try:
                size *= len(list(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - a glob
                return None
    return size


def sweep_progress(number: int, folder: str, environment: dict[str, str] | None = None) -> str:
    """The line a sweep's run prints as it starts: ``[sweep] run k of N: folder``, the time since the sweep
    started and, from the runs before it, an estimate of the time left (runs at once make it rough)."""
    environment = os.environ if environment is None else environment
    k = number + 1
    size = environment.get(SWEEP_SIZE)
    line = f"[sweep] run {k}{f' of {size}' if size else ''}: {folder}"
    try:
        elapsed = time.time() - float(environment.get(SWEEP_STARTED, ""))
    except ValueError:
        return line
    line += f" ({duration(elapsed)} since the sweep started"
    left = time_left(elapsed, k - 1, int(size)) if size else None
    if left is not None and int(size) >= k:
        line += f", about {duration(left)} left"
    return line + ")"


# ---- Run folders ---------------------------------------------------------------------------------------

VALUE_LIMIT = 24  # characters of each value in a run folder's name (the digest tells full overrides apart)
DIGEST_LENGTH = 8


def parsed(overrides: Iterable[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def swept_keys(overrides: Iterable[str]) -> list[str]:
    """The keys that take more than one value in a sweep's overrides (``estimator=rloo,st seed=0,1``:
    ``estimator`` and ``seed``), in their order; a glob or a range counts as varying."""
    keys: list[str] = []
    for override in parsed(overrides):
        if not override.is_sweep_override():
            continue
        try:
            several = len(list(override.sweep_string_iterator())) > 1
        except Exception:  # noqa: BLE001 - a glob: its values are known only against the config files
            several = True
        if several and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def is_excluded(key: str, excluded: tuple[str, ...]) -> bool:
    """Whether an override's key is one of the ``excluded`` keys or lies below one (``logger.dir``)."""
    key = key.lstrip("+~")
    return any(key == name or key.startswith(f"{name}.") for name in excluded)


def overrides_digest(overrides: Iterable[str], excluded: Iterable[str] = NOT_PART_OF_THE_RUN) -> str:
    """8 hex digits of the sha256 of a run's overrides as written, in sorted order, without the ``excluded``
    keys (those that do not change what a run computes): the run's identity in its folder's name."""
    excluded = tuple(excluded)
    kept = sorted(override for override in overrides if not is_excluded(override.split("=", 1)[0], excluded))
    return hashlib.sha256("\n".join(kept).encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LENGTH]


def run_folder_name(
    overrides: list[str], swept: Iterable[str] | None = None, excluded: Iterable[str] = NOT_PART_OF_THE_RUN
) -> str:
    """A sweep run's folder name: ``KEY=VALUE,...@DIGEST`` (module docstring). ``swept``: the keys shown
    (None: every override's key but the ``excluded``); each value is cut to ``VALUE_LIMIT`` characters, the
    shown part to what leaves room for the digest, and the whole passes through ``safe_name``."""
    excluded = tuple(excluded)
    values = {}
    for override in parsed(overrides):
        key = override.key_or_group
        if not is_excluded(key, excluded) and not override.is_delete():
            values[key] = override.get_value_element_as_str()
    shown = list(values) if swept is None else [key for key in swept if key in values]
    readable = ",".join(f"{key}={values[key][:VALUE_LIMIT]}" for key in shown)
    digest = overrides_digest(overrides, excluded)
    room = LIMIT - DIGEST_LENGTH - 1
    if len(readable) > room:
        readable = readable[:room].rsplit(",", 1)[0] if "," in readable[:room] else readable[:room]
    return safe_name(f"{readable}@{digest}" if readable else f"run@{digest}")


def run_folder(swept: str = "", *, _root_: DictConfig) -> str:
    """The resolver ``${run_folder:KEYS}`` of ``hydra.sweep.subdir``: this run's folder name from its
    overrides (``hydra.overrides.task``) and the keys that vary (``KEYS``, comma-separated; empty: every
    key)."""
    hydra = _root_.hydra
    overrides = [str(item) for item in hydra.overrides.task]
    excluded = [str(key) for key in OmegaConf.select(hydra, "job.config.override_dirname.exclude_keys") or ()]
    keys = [key for key in swept.split(",") if key] if swept else None
    return run_folder_name(overrides, keys, excluded or NOT_PART_OF_THE_RUN)


def register_resolver() -> None:
    """Make ``${run_folder:...}`` known to OmegaConf (before Hydra composes a config)."""
    OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)


FRESH = {".hydra", "main.log"}  # what Hydra writes into a run folder before the run starts


def finished_elsewhere(directory: Path, config: DictConfig, old_name: str | None) -> Path | None:
    """Another folder of the sweep that holds a finished ``ok`` run of this config: one of the same overrides
    named for other varying keys (the same ``@DIGEST``), or ``old_name``, the folder Hydra's
    ``override_dirname`` named before the run folders were shortened. None when there is none."""
    directory = Path(directory)
    parent = directory.parent
    candidates = []
    if old_name and old_name != directory.name:
        candidates.append(parent / old_name)
    _, at, digest = directory.name.rpartition("@")
    if at and len(digest) == DIGEST_LENGTH:
        candidates += sorted(path for path in parent.glob(f"*@{digest}") if path.name != directory.name)
    for candidate in candidates:
        try:
            inside = candidate.resolve().parent == parent.resolve()  # one folder below the sweep's, no climb
        except (OSError, RuntimeError):
            continue
        if inside and candidate.is_dir() and finished_summary(candidate, config) is not None:
            return candidate
    return None


def remove_if_fresh(directory: Path) -> bool:
    """Remove a run folder that holds only what Hydra wrote before the run (``.hydra/`` and an empty
    ``main.log``): a run that found its finished twin elsewhere leaves no empty run behind. True when it
    removed it."""
    directory = Path(directory)
    try:
        entries = {path.name: path for path in directory.iterdir()}
        log = entries.get("main.log")
        if not set(entries) <= FRESH or (log is not None and log.stat().st_size > 0):
            return False
        shutil.rmtree(directory)
    except OSError:
        return False
    return True


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
