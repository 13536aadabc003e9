"""A same-point gradient study: after its trajectory trained and saved its checkpoints, probe every member
of the study at every checkpoint and write ``study.csv`` and ``paired.csv``.

Called by the runner (``bench.run.runner.run``) when the config has a ``study`` node; the run's summary then
says ``kind: study`` and adds ``bench.formats.contract.STUDY_FIELDS``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.campaigns.same_point.measure import (
    Measured,
    checkpoint_noise,
    checkpoint_reference,
    initial_states,
    measure,
    prepare,
    stream_seed,
)
from bench.campaigns.same_point.paired import (
    PAIRED_METRICS,
    paired_statistics,
    resampled_indices,
    resampled_sums,
)
from bench.campaigns.same_point.roster import Member, roster, variant_members
from bench.formats.contract import PAIRED_FILE, PAIRED_HEADER, STUDY_FILE, STUDY_HEADER
from bench.formats.errors import ConfigError
from bench.formats.files import atomic_write_text
from bench.run.checkpoint import CheckpointError, checkpoint_path, load, params_digest
from bench.run.probe.draws import probe_targets
from bench.tasks.base import Task


def study_steps(config: DictConfig) -> list[int]:
    """The checkpoints the study probes: ``study.steps`` up to the run's ``steps``; each must be one of
    ``checkpoint.steps`` (the experiment sets ``checkpoint.steps: ${study.steps}``)."""
    listed = OmegaConf.to_container(config.study.steps) if OmegaConf.is_list(config.study.steps) else None
    if not listed or not all(isinstance(step, int) and not isinstance(step, bool) for step in listed):
        raise ConfigError(
            f"study.steps must be a list of whole numbers (the checkpoints to probe), e.g. "
            f"'study.steps=[0,10,100]', got study.steps={config.study.get('steps')}."
        )
    steps = sorted({step for step in listed if 0 <= step <= config.steps})
    saved = set(OmegaConf.select(config, "checkpoint.steps", default=[]) or [])
    missing = [step for step in steps if step not in saved]
    if missing:
        raise ConfigError(
            f"the study probes steps {missing} of study.steps, but checkpoint.steps does not save them; set "
            f"checkpoint.steps to include them (an experiment sets checkpoint.steps: ${{study.steps}})."
        )
    return steps


def trajectory_name(config: DictConfig) -> str:
    """The trajectory's label: ``study.trajectory``, else the name of the estimator that trains it."""
    return str(config.study.get("trajectory") or config.estimator.name)


def csv_text(header: tuple[str, ...], rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def number(value: float) -> str:
    return repr(float(value)) if value is not None else "nan"


def run_study(
    config: DictConfig,
    task: Task,
    directory: Path,
    config_digest: str,
    signals: Any = None,
) -> dict[str, Any]:
    """Probe every member at every checkpoint of the trajectory in ``directory``; write ``study.csv`` and
    ``paired.csv`` there (rewritten after each checkpoint, atomically); return the summary's study fields.

    ``signals``: the run's ``bench.run.signals.StopSignals``, read between estimators: a stop signal is
    acted on there as at the end of a training step (``StopSignals.stop``): the run is recorded as
    interrupted, and re-running it resumes from its newest checkpoint and probes every checkpoint again.
    """
    started = time.perf_counter()
    study = config.study
    directory = Path(directory)
    steps = study_steps(config)
    draws, seed = int(study.get("draws", 1024)), int(config.seed)
    if draws < 2:
        raise ConfigError(f"study.draws must be >= 2 (a variance needs two draws), got {draws}.")
    trajectory = trajectory_name(config)
    wrt = config.probe.get("wrt", "parameters")
    batch = task.probe_batch()
    study_rows: list[tuple] = []
    paired_rows: list[tuple] = []
    members: list[Member] = []
    left_out: dict[str, str] = {}
    states: list[dict] = []
    for index, step in enumerate(steps):
        path = checkpoint_path(directory, step)
        try:
            state = load(path, config_digest)
        except CheckpointError as error:
            raise RuntimeError(f"the study cannot load its checkpoint at step {step}: {error}") from None
        task.load_state_dict(state["task"])
        digest = params_digest(task)
        if digest != state["params_digest"]:
            raise RuntimeError(f"checkpoint {path}: the loaded parameters do not match its params_digest")
        with torch.no_grad():
            params = task.distribution(batch)
        if index == 0:
            members, left_out = roster(config, task, params, task.objective(batch))
            if not members:
                raise ConfigError(
                    f"no estimator to study on task {config.task.name}: "
                    + "; ".join(f"{name}: {why}" for name, why in left_out.items())
                )
            states = initial_states(members, task, params, task.objective(batch))
        prefix = (trajectory, seed, index, step)
        with torch.no_grad():
            evaluation = task.evaluate()
        targets = probe_targets(task, batch, wrt)
        reference = checkpoint_reference(task, batch, targets, seed, step)
        noise = checkpoint_noise(params, max(member.samples for member in members), draws, seed, step)
        checkpoint_values = {**evaluation, "draws": float(draws)}
        if reference.mean is not None:
            checkpoint_values["reference_norm"] = float(reference.mean.double().norm())
        study_rows += [
            (*prefix, digest, config.estimator.name, "", name, number(value))
            for name, value in checkpoint_values.items()
        ]
        measured: dict[tuple[str, int], Measured] = {}
        for member, initial in zip(members, states, strict=True):
            if signals is not None and signals.requested is not None:
                # As at a training step's end: recorded as interrupted, then the handler that was there
                # before (submitit's requeues the job; one that returns lets the study go on).
                signals.stop(config.steps, checkpoint_path(directory, steps[-1]))
            done = prepare(member, initial, task, batch, step, study, seed)
            result = measure(task, member, batch, draws, targets, reference, noise, seed, step)
            result.statistics.update(done)
            measured[member.key] = result
            after = params_digest(task)  # what the estimator saw: the checkpoint's parameters, untouched
            study_rows += [
                (*prefix, after, member.name, member.samples, name, number(value))
                for name, value in result.statistics.items()
            ]
        paired_rows += paired_rows_at(prefix, digest, members, measured, study, seed, step)
        atomic_write_text(directory / STUDY_FILE, csv_text(STUDY_HEADER, study_rows))
        atomic_write_text(directory / PAIRED_FILE, csv_text(PAIRED_HEADER, paired_rows))
        print(
            f"[study] {trajectory} seed={seed}: step {step} ({index + 1}/{len(steps)}), "
            f"{len(members)} estimators probed",
            file=sys.stderr,
        )
    return {
        "trajectory": trajectory,
        "study_steps": ",".join(str(step) for step in steps),
        "study_estimators": ",".join(f"{member.name}@{member.samples}" for member in members),
        "study_left_out": "; ".join(f"{name}: {why}" for name, why in left_out.items()) or None,
        "study_draws": draws,
        "study_samples": int(study.get("samples", 2)),
        "study_time_s": time.perf_counter() - started,
    }


def paired_rows_at(
    prefix: tuple,
    digest: str,
    members: list[Member],
    measured: dict[tuple[str, int], Measured],
    study: DictConfig,
    seed: int,
    step: int,
) -> list[tuple]:
    """``paired.csv`` rows of one checkpoint: every ordered pair of members within each variant."""
    rows = []
    indices = resampled_indices(
        len(next(iter(measured.values())).norms.centred),
        int(study.get("bootstrap", 1000)),
        stream_seed(seed, step, "bootstrap"),
    )
    sums = {key: resampled_sums(result.norms, indices) for key, result in measured.items()}
    for variant, group in variant_members(members).items():
        for a, b in itertools.permutations(group, 2):
            values = paired_statistics(measured[a.key].norms, measured[b.key].norms, sums[a.key], sums[b.key])
            rows += [
                (*prefix, digest, variant, a.name, a.samples, b.name, b.samples, name, number(values[name]))
                for name in PAIRED_METRICS
                if not math.isnan(values[name]) or name == "variance_ratio"
            ]
    return rows
