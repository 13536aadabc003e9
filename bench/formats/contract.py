"""The results contract: what a run writes and what every reader of runs may rely on.

One place defines it; the runner writes by it, the report and ``python -m bench.check`` read by it, and the
tests import it. ``docs/design.md`` ("Results") explains it in prose.

A run folder holds ``.hydra/`` (Hydra's resolved config and the overrides), ``metrics.csv`` in long form
(``METRICS_HEADER``: one ``step,metric,value`` row per measurement; ``nan`` where a value does not exist) and
``summary.json``: one flat JSON object with the fields of ``SUMMARY_FIELDS``. JSON stays strict: a number
that does not exist is ``null``, never ``NaN``. Both files are written atomically (a temporary file renamed
over the old one), so a reader sees a complete file or none; ``summary.json`` is written only when the run
ends, so a run folder without one is a run that was killed or is still running.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SUMMARY_FILE, METRICS_FILE = "summary.json", "metrics.csv"
"""The two files of every run folder (beside Hydra's ``.hydra/``)."""

OK, DIVERGED, FAILED, SKIPPED, INTERRUPTED = "ok", "diverged", "failed", "skipped", "interrupted"
STATUSES = (OK, DIVERGED, FAILED, SKIPPED, INTERRUPTED)
"""``ok``: finished. ``diverged``: the loss, a gradient or the objective became non-finite; the run stopped
there (``diverged_step``). ``failed``: bad settings or an error (``error`` says which). ``skipped``: the
combination cannot run by design (an estimator that does not fit the task). ``interrupted``: stopped by a
signal, resumable."""

REFERENCE_KINDS = ("analytic", "exact", "monte_carlo", "none")
"""Where a probe's reference gradient g* comes from: a closed form, an enumeration of every outcome, many
draws of an unbiased estimator (``reference_draws`` of them), or nowhere (bias fields are null)."""

RUN_KINDS = ("train", "study")
"""``train``: a training run probed along its own trajectory. ``study``: a same-point gradient study."""

METRICS_HEADER = ("step", "metric", "value")

STUDY_HEADER = (
    "trajectory",
    "seed",
    "checkpoint",
    "step",
    "params_digest",
    "estimator",
    "samples",
    "metric",
    "value",
)
"""``study.csv`` of a study run (``kind: study``, ``bench.campaigns.same_point``), long form: one row per
(checkpoint, estimator, S, metric). ``checkpoint`` numbers the checkpoints from 0, ``step`` is the training
step it was saved at, ``params_digest`` the sha256 of the task's parameters the estimator was probed at
(``bench.run.checkpoint.params_digest``; one value per checkpoint, the same for every estimator). Metrics: the
``PROBE_FIELDS``, ``grad_mse_se``, ``f_evals``, ``probe_vectorized``, ``common_random_numbers`` (1: the draws
used the shared noise) and the state the estimator was fixed at (``tau``, ``warmup_calls``,
``variance_steps``). Rows with an empty ``samples`` describe the checkpoint itself (the task's evaluation,
``reference_norm`` = ‖g*‖, ``draws`` = M) under the trajectory's estimator."""

PAIRED_HEADER = (
    "trajectory",
    "seed",
    "checkpoint",
    "step",
    "params_digest",
    "variant",
    "estimator",
    "samples",
    "baseline",
    "baseline_samples",
    "metric",
    "value",
)
"""``paired.csv`` of a study run: the paired comparison of ``estimator`` (at ``samples``) against ``baseline``
(at ``baseline_samples``) at one checkpoint, every ordered pair within a ``variant`` (``fixed``: every
estimator at ``study.samples``; ``equal_cost``: evaluations of f matched to RLOO's; ``equal_cost_<name>``:
RLOO matched to an estimator that costs more). Metrics:
``bench.campaigns.same_point.paired.PAIRED_METRICS``."""

STUDY_FILE, PAIRED_FILE = "study.csv", "paired.csv"
STUDY_FILES = {STUDY_FILE: STUDY_HEADER, PAIRED_FILE: PAIRED_HEADER}
"""The files a study run writes beside ``summary.json``, and their headers."""

TUNING_FILE = "tuning.json"
"""A tuned study's document at the top of its folder (``bench.campaigns.tuning``): the protocol's settings,
every stage-1 run's score, the rule and the choice; the report reads it (``bench.report.tuning``)."""

TUNING_STAGE_ONE_DIR, TUNING_STAGE_TWO_DIR, TUNING_HELDOUT_DIR = "tune", "final", "heldout"
"""A tuned study's folders of stage-1 runs (the grid), stage-2 runs (the chosen settings, fresh seeds) and
held-out runs (the chosen settings, the same fresh seeds, on a variant of the problem they were not tuned
on)."""

REPORT_DIR = "report"
"""The folder ``python -m bench.report DIR`` writes into by default (``DIR/report``); readers of runs skip
it."""

PROBE_FIELDS = (
    "grad_variance",
    "grad_bias",
    "grad_bias_se",
    "grad_bias_sq",
    "grad_mse",
    "grad_cos",
    "grad_snr",
    "grad_bias_p",
    "grad_bias_rel",
    "grad_variance_rel",
)
"""The statistics of one probe (``docs/design.md``, "Metrics"); in ``metrics.csv`` at every probe step and in
``summary.json`` at the last probe. Null where they do not exist (no reference: the bias fields)."""

PROBE_COST_FIELDS = ("estimate_time_ms", "probe_time_ms", "probe_vectorized")
"""What a probe measures about its own cost; wall times go to ``summary.json`` only, never to
``metrics.csv``, which holds what the seed determines and is bit-for-bit reproducible."""

REFERENCE_FIELDS = (
    "reference_estimator",
    "reference_samples",
    "reference_draws",
    "reference_variance",
    "reference_time_ms",
)
"""What a Monte-Carlo reference was (``reference: monte_carlo``; ``bench.run.probe.reference``): the unbiased
estimator, its samples per draw, N, the variance V̂_R of one draw and the wall time of the reference, at the
last probe. In ``summary.json`` only, and only where the reference is ``monte_carlo``."""

NOT_PART_OF_THE_RUN = (
    "progress",
    "threads",
    "force",
    "task.report",
    "resume",
    "checkpoint.steps",
    "checkpoint.every",
    "preflight.memory_limit",
    "logger",
    "task.mirror",
)
"""Keys that change how a run is shown, scheduled or saved, not what it computes (``task.report``: the
figures and columns a task asks the report for; ``resume`` and ``checkpoint.*``: ``bench.run.checkpoint``;
``preflight.memory_limit``: the memory a run may plan on, ``bench.run.limits``; ``logger``: where the run's
numbers are also sent, ``bench.run.tracking``; ``task.mirror``: where data files are downloaded from, checked
against the same checksums, ``bench.tasks.download``).
Hydra's ``override_dirname.exclude_keys`` (``conf/config.yaml``) must equal this list, so that a sweep has
one folder per configuration and seed whatever these keys say (a test checks it). ``config_digest`` leaves
them out."""

NOT_PART_OF_THE_CONFIGURATION = ("seed", *NOT_PART_OF_THE_RUN)
"""Keys that do not change the configuration: runs that differ only in these are seeds of one
configuration. Labels and ``variant_digest`` leave them out."""

NUMBER = (int, float)


@dataclass(frozen=True)
class Field:
    """One field of ``summary.json``: its name, the JSON types it may take, and what it means."""

    name: str
    types: tuple[type, ...]
    nullable: bool
    meaning: str


def _field(name: str, types: type | tuple[type, ...], meaning: str, nullable: bool = False) -> Field:
    return Field(name, types if isinstance(types, tuple) else (types,), nullable, meaning)


SUMMARY_FIELDS: tuple[Field, ...] = (
    _field("task", str, "the task's name (its config's `name`)"),
    _field("estimator", str, "the estimator's name"),
    _field("optimizer", str, "the optimizer's name (lookahead_<inner> for Lookahead)"),
    _field("seed", int, "the run's seed: initialization, data order, sampling noise and probes"),
    _field("status", str, f"one of {', '.join(STATUSES)}"),
    _field("kind", str, f"one of {', '.join(RUN_KINDS)}"),
    _field("steps", int, "training steps that finished"),
    _field("wall_time_s", NUMBER, "wall time of the whole run, seconds"),
    _field("step_time_ms", NUMBER, "median training step, probes excluded, warm-up dropped", True),
    _field("optimizer_time_ms", NUMBER, "median time of the optimizer's step alone", True),
    _field(
        "estimate_time_ms",
        NUMBER,
        "median over the training steps of one estimate's forward and backward (optimizer excluded)",
        True,
    ),
    _field("f_evals", int, "evaluations of f per gradient estimate, for one data point", True),
    _field("estimate_flops", int, "matmul and convolution FLOPs of one estimate on the probe batch", True),
    _field("final_loss", NUMBER, "the task's headline objective at the end", True),
    *(
        _field(name, NUMBER, "probe statistic at the last probe (docs/design.md)", True)
        for name in PROBE_FIELDS
    ),
    _field("probe_time_ms", NUMBER, "wall time of the last probe's M draws", True),
    _field("probe_vectorized", NUMBER, "1 if the last probe's draws were vectorized, 0 if looped", True),
    _field("reference", str, f"one of {', '.join(REFERENCE_KINDS)}"),
    _field("error", str, "why the run is not ok", True),
    _field("samples", int, "S, samples per gradient estimate", True),
    _field("probe_draws", int, "M, gradient estimates per probe"),
    _field("threads", int, "torch threads the run used"),
    _field("device", str, "where the run computed: cpu or cuda:N (as requested, if the run was refused)"),
    _field("device_name", str, "the GPU's name or the CPU's model", True),
    _field(
        "peak_memory_mb",
        NUMBER,
        "peak memory of this run alone, MiB: on a GPU torch.cuda.max_memory_allocated after a reset at the "
        "run's start; on the CPU the process's peak resident set (VmHWM) after a reset (bench/run/costs.py)",
        True,
    ),
    _field("config_digest", str, "fingerprint of what the run computes (resuming skips only a match)"),
    _field("variant_digest", str, "fingerprint of the configuration without the seed"),
    _field("python_version", str, "versions and provenance"),
    _field("torch_version", str, "versions and provenance"),
    _field("numpy_version", str, "versions and provenance"),
    _field("hydra_version", str, "versions and provenance"),
    _field("git_commit", str, "the commit of the code (null outside a git checkout)", True),
    _field("hostname", str, "the machine"),
)
"""Every field ``summary.json`` always has. Optional fields (present in some runs only) are in
``OPTIONAL_FIELDS``."""

OPTIONAL_FIELDS: tuple[Field, ...] = (
    _field("diverged_step", int, "the step that diverged (status diverged)"),
    _field("best_known_objective", NUMBER, "the task's best possible objective, where it is known"),
    _field("data", str, "the data set the task trained on (e.g. digits28, mnist), for tasks with one"),
    _field(
        "resumed_from",
        int,
        "the step of the checkpoint this run continued from (null: it ran from the start)",
        nullable=True,
    ),
    _field("resumes", int, "how many times the run continued from a checkpoint (0: never)"),
    _field(
        "resumed_threads",
        int,
        "threads of the run that wrote the checkpoint resumed from; when it is not `threads`, the numbers "
        "may differ in the last bits from an uninterrupted run's",
    ),
    _field("resume_refused", str, "why checkpoints in the run's folder were not loaded (corrupt, other run)"),
    _field("package_version", str, "the installed gradbench version (unknown in a plain source tree)"),
    _field(
        "git_modified", bool, "whether the checkout's tracked files differed from git_commit", nullable=True
    ),
    _field(
        "source_hash",
        str,
        "sha256 (16 hex digits) of the code's source files and configs (bench.formats.version.source_hash)",
    ),
    _field(
        "schedule",
        str,
        "the learning-rate schedule after the warmup: constant, cosine or linear (optim/schedules.py)",
    ),
    _field("warmup_steps", int, "steps of linear learning-rate warmup before the schedule (0: none)"),
    _field(
        "optimizer_split",
        str,
        "Muon only: how many matrices Muon stepped and how many other tensors AdamW stepped, at which rate",
    ),
)

REFERENCE_SUMMARY_FIELDS: tuple[Field, ...] = (
    _field(
        "reference_estimator", str, "the unbiased estimator whose draws' mean is the Monte-Carlo reference"
    ),
    _field("reference_samples", int, "S of the Monte-Carlo reference's estimator"),
    _field("reference_draws", int, "N, draws of the Monte-Carlo reference"),
    _field(
        "reference_variance", NUMBER, "V̂_R, the variance (trace) of one draw of the Monte-Carlo reference"
    ),
    _field("reference_time_ms", NUMBER, "wall time of the last probe's Monte-Carlo reference"),
)
"""``REFERENCE_FIELDS``: present exactly when ``reference`` is ``monte_carlo`` (and the run probed)."""

STUDY_FIELDS: tuple[Field, ...] = (
    _field("trajectory", str, "the trajectory's label: its estimator's name, or study.trajectory"),
    _field("study_steps", str, "the checkpoints probed, comma-separated training steps"),
    _field("study_estimators", str, "the estimators probed, comma-separated name@S"),
    _field("study_left_out", str, "estimators that fit the latent kind but not the task, and why", True),
    _field("study_draws", int, "M, gradient estimates per estimator and checkpoint"),
    _field("study_samples", int, "S of the fixed-samples comparison"),
    _field("study_time_s", NUMBER, "wall time of the probes at the checkpoints, seconds"),
)
"""Fields of a study run's summary (``kind: study``), present when it finished (status ok)."""

RECOMMENDATION_FILE, RECOMMENDATION_REPORT = "recommendation.json", "recommendation.md"
"""What ``python -m bench.recommend`` writes at the top of its folder: the answer with its evidence (strict
JSON, ``RECOMMENDATION_FIELDS``) and the same as Markdown."""

RECOMMENDATION_FIELDS: tuple[Field, ...] = (
    _field("task", str, "the task's name"),
    _field("overrides", list, "the command line's overrides of the runs (the recommend.* settings apart)"),
    _field("answer", str, "the recommendation in a paragraph: what to use, its objective, its bias verdict"),
    _field(
        "recommended",
        dict,
        "estimator, samples (S), optimizer, lr, f_evals and its final objective with its 95% interval",
    ),
    _field("best_by_objective", str, "the candidate with the lowest mean final objective in stage 2"),
    _field("ties", list, "candidates indistinguishable from the best (paired over seeds, Holm-adjusted)"),
    _field("criterion", str, "what the ranking is by"),
    _field("objective_metric", str, "the metric read: validation_objective, else objective", True),
    _field("budget_minutes", NUMBER, "the wall-time budget given"),
    _field("elapsed_minutes", NUMBER, "the wall time the protocol took"),
    _field("budget_f_evals", int, "evaluations of f per estimate of every candidate (equal cost)", True),
    _field("steps", int, "training steps of every run"),
    _field("stage_two_seeds", list, "the fresh seeds of stage 2"),
    _field("reference", str, f"the task's reference gradient: one of {', '.join(REFERENCE_KINDS)}"),
    _field("enumeration", str, "said where exact enumeration is affordable", True),
    _field("predictor", str, "the same-point statistic the evidence reports as the predictor of training"),
    _field("evidence_checkpoints", list, "training steps of the same-point evidence"),
    _field("evidence_family", str, "the family of the bias tests' Holm adjustment", True),
    _field("candidates", list, "every candidate: its cost, learning rates, scores and same-point evidence"),
    _field("left_out", dict, "estimators that fit the task but were not compared, and why"),
    _field("caveats", list, "what limits the answer (curves still falling, grid edges, seeds, budget cuts)"),
    _field("failures", list, "runs that did not finish, with why"),
    _field("code_version", dict, "the code that computed it (bench.formats.version.code_version)"),
    _field("folder", str, "where its runs are"),
)
"""Every field of ``recommendation.json``."""


def recommendation_problems(document: Any) -> list[str]:
    """What is wrong with a parsed ``recommendation.json`` against ``RECOMMENDATION_FIELDS``."""
    if not isinstance(document, dict):
        return [f"is a JSON {type(document).__name__}, not an object"]
    problems = []
    for field in RECOMMENDATION_FIELDS:
        if field.name not in document:
            problems.append(f"lacks the field '{field.name}'")
            continue
        value = document[field.name]
        if value is None:
            if not field.nullable:
                problems.append(f"'{field.name}' is null, but it must be {type_names(field)}")
        elif (isinstance(value, bool) and bool not in field.types) or not isinstance(value, field.types):
            problems.append(f"'{field.name}' is {type(value).__name__}, but it must be {type_names(field)}")
    recommended = document.get("recommended")
    if isinstance(recommended, dict):
        missing = [key for key in ("estimator", "samples", "optimizer", "lr") if key not in recommended]
        if missing:
            problems.append(f"'recommended' lacks {', '.join(missing)}")
        elif recommended.get("estimator") == "exact":
            problems.append("'recommended' is exact, the reference, which is never the recommendation")
    return problems


FIELDS = {
    field.name: field
    for field in (*SUMMARY_FIELDS, *OPTIONAL_FIELDS, *REFERENCE_SUMMARY_FIELDS, *STUDY_FIELDS)
}


def empty_summary() -> dict[str, Any]:
    """A summary with every field present and null, for the runner to fill in."""
    return {field.name: None for field in SUMMARY_FIELDS}


def warmup_steps(count: int) -> int:
    """Steps dropped from the start of a run's step times before their median: min(5, count // 10).

    The first steps pay for lazy initialization (allocations, the optimizer's state, caches); a short run
    keeps most of its steps.
    """
    return min(5, count // 10)


def steady_median(times: Sequence[float]) -> float | None:
    """The median of ``times`` after the warm-up steps (``warmup_steps``); None when there are none."""
    if not times:
        return None
    return statistics.median(times[warmup_steps(len(times)) :])


NAME_FIELDS = ("task", "estimator", "optimizer")
"""Summary fields that are names, which readers build paths of: they must be safe names
(``bench.formats.names``; ``python -m bench.check`` flags any other)."""


def summary_problems(summary: Any) -> list[str]:
    """What is wrong with a parsed ``summary.json`` against this contract; empty when nothing is."""
    if not isinstance(summary, dict):
        return [f"is a JSON {type(summary).__name__}, not an object"]
    problems = []
    for field in SUMMARY_FIELDS:
        if field.name not in summary:
            problems.append(f"lacks the field '{field.name}'")
    for name, value in summary.items():
        field = FIELDS.get(name)
        if field is None:
            continue  # extra fields are allowed (a task's or a study's own)
        if value is None:
            if not field.nullable:
                problems.append(f"'{name}' is null, but it must be {type_names(field)}")
            continue
        if (isinstance(value, bool) and bool not in field.types) or not isinstance(value, field.types):
            problems.append(
                f"'{name}' is {type(value).__name__} {value!r:.40}, but it must be {type_names(field)}"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"'{name}' is {value}, which strict JSON does not allow (null instead)")
    status = summary.get("status")
    if isinstance(status, str) and status not in STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if isinstance(status, str) and status != "ok" and not summary.get("error"):
        problems.append(f"status {status!r} without an 'error' saying why")
    reference = summary.get("reference")
    if isinstance(reference, str) and reference not in REFERENCE_KINDS:
        problems.append(f"reference {reference!r} is not one of {', '.join(REFERENCE_KINDS)}")
    kind = summary.get("kind")
    if isinstance(kind, str) and kind not in RUN_KINDS:
        problems.append(f"kind {kind!r} is not one of {', '.join(RUN_KINDS)}")
    present = [name for name in REFERENCE_FIELDS if summary.get(name) is not None]
    if reference != "monte_carlo" and present:
        problems.append(
            f"reference is {reference!r}, yet the Monte-Carlo fields {', '.join(present)} have values"
        )
    if reference == "monte_carlo" and summary.get("grad_bias_sq") is not None:
        missing = [name for name in REFERENCE_FIELDS if name not in present]
        if missing:
            problems.append(f"a Monte-Carlo reference without {', '.join(missing)}")
    if kind == "study" and status == "ok":
        missing = [field.name for field in STUDY_FIELDS if field.name not in summary]
        if missing:
            problems.append(f"a study (kind study) without {', '.join(missing)}")
    if reference == "none":
        invented = [
            name
            for name in ("grad_bias", "grad_bias_sq", "grad_mse", "grad_cos")
            if summary.get(name) is not None
        ]
        if invented:
            problems.append(f"reference is none, yet the bias fields {', '.join(invented)} have values")
    return problems


def type_names(field: Field) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names |= {list: "a list", dict: "an object"}
    kinds = " or ".join(dict.fromkeys(names.get(kind, kind.__name__) for kind in field.types))
    return kinds + (" or null" if field.nullable else "")
