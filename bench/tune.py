"""``python -m bench.tune``: tune every optimizer of a study the same way, then rerun what was chosen.

An optimizer comparison that does not tune each optimizer by the same rule measures the learning rate, not
the optimizer (Choi et al. 2019, "On Empirical Comparisons of Optimizers for Deep Learning"; Sivaprasad et
al. 2020, "Optimizer Benchmarking Needs to Account for Hyperparameter Tuning"). The protocol follows DeepOBS
(Schneider, Balles & Hennig 2019): a grid search scored on held-out data, then the best setting rerun with
fresh seeds and reported on the test set.

- **Stage 1**: for every optimizer of the study (``tuning.optimizers``) and every condition
  (``tuning.conditions``, tuned separately: e.g. each estimator, or each vocabulary size), every point of
  the optimizer's grid (the learning rate, log-spaced, and any other setting the study lists, e.g.
  Lookahead's k and α) runs with each of the ``tuning.seeds``. It is one Hydra multirun per optimizer
  through Hydra's basic sweeper (``python -m bench -m ...``, the command ``--dry-run`` prints), into
  ``ROOT/tune/<optimizer>/``, so that it resumes like every sweep: runs that finished are skipped.
- **The choice** (``choose``): per optimizer and condition, the setting with the lowest mean over the
  stage-1 seeds of the final ``tuning.metric`` (default ``validation_objective``, the validation split; a
  task that records none, such as ``toy``, ``gaussian`` or ``quadratic``, whose objective is exact and has no
  data, is scored on ``objective``). A run that diverged, failed or was skipped scores +∞, so a setting with
  such a seed is never chosen over one without; ties go to the first setting in grid order. The grid, every
  run's score, the rule, the budget and the choice are written to ``ROOT/tuning.json``.
- **Stage 2**: every chosen setting reruns with the ``tuning.final_seeds`` (at least
  ``MINIMUM_FINAL_SEEDS``, disjoint from the stage-1 seeds, so the reported numbers are not the ones that
  chose the setting), one Hydra multirun per optimizer and condition, into
  ``ROOT/final/<optimizer>[/<condition>]/``. ``python -m bench.report ROOT`` reports them on the test
  objective (``bench.report.tuning``).

ROOT is ``hydra.sweep.dir`` (an experiment sets it; ``hydra.sweep.dir=DIR`` on the command line wins). The
study's settings are the ``tuning`` node of its experiment config; the runs themselves do not carry it
(``~tuning``), so a changed grid leaves the runs that are still in it finished. Every other override on the
command line (``steps=100``, ``hydra/launcher=joblib``) applies to every run of both stages.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import runpy
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
TUNING_FILE = "tuning.json"
STAGE_ONE_DIR = "tune"
STAGE_TWO_DIR = "final"
MINIMUM_FINAL_SEEDS = 5
DEFAULT_METRIC = "validation_objective"
FALLBACK_METRIC = "objective"
DEFAULT_STAGE_ONE = ["probe.every=0"]
SPEC_KEYS = ("seeds", "final_seeds", "metric", "stage_one", "conditions", "optimizers", "baseline")
NOT_FINISHED = ("interrupted", "missing")
"""Stage-1 outcomes that leave the grid incomplete: the run is to be done (re-running resumes it)."""


def rule_text(metric: str) -> str:
    """The selection rule, as tuning.json and the report state it."""
    return (
        f"lowest mean over the stage-1 seeds of the final {metric} (its value at the last step; "
        f"{FALLBACK_METRIC} where a task records no {metric}); a run that diverged, failed or was skipped "
        "scores +inf, so a setting with such a seed is never chosen over one without; ties go to the first "
        "setting in grid order"
    )


# ---- The study's settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """The ``tuning`` node of a study, checked: seeds of the two stages, the score, stage 1's own overrides,
    the conditions tuned separately (override key → values), and per optimizer option its grid (override
    key → values) and fixed settings (override key → value)."""

    seeds: list[int]
    final_seeds: list[int]
    metric: str
    stage_one: list[str]
    conditions: dict[str, list[Any]]
    grids: dict[str, dict[str, list[Any]]]
    fixed: dict[str, dict[str, Any]]
    baseline: str | None


def optimizer_options() -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / "optimizer").glob("*.yaml"))


def seed_list(node: dict[str, Any], key: str, least: int) -> list[int]:
    values = node.get(key)
    if not isinstance(values, list) or len(values) < least or len(set(map(str, values))) != len(values):
        raise ConfigError(
            f"tuning.{key} must be a list of at least {least} distinct whole numbers, got {values!r}."
        )
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise ConfigError(f"tuning.{key} must hold whole numbers, got {values!r}.")
    return list(values)


def split_grid(node: dict[str, Any], prefix: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """A nested grid as override keys: lists are axes, single values fixed settings."""
    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            inner_axes, inner_fixed = split_grid(value, name)
            axes.update(inner_axes)
            fixed.update(inner_fixed)
        elif isinstance(value, list):
            if not value:
                raise ConfigError(f"tuning.optimizers: the grid of {name} is empty; give at least one value.")
            axes[name] = list(value)
        else:
            fixed[name] = value
    return axes, fixed


def parse_spec(node: Any) -> Spec:
    """``Spec`` from the plain ``tuning`` node; ConfigError naming the key that is wrong."""
    if not isinstance(node, dict):
        raise ConfigError(
            "no tuning settings: name a study whose experiment config has a `tuning` node, e.g. "
            "python -m bench.tune +experiment=optimizers_toy_tuned (see bench/tune.py)."
        )
    unknown = sorted(set(node) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"unknown tuning keys {', '.join(unknown)}; known: {', '.join(SPEC_KEYS)}.")
    seeds = seed_list(node, "seeds", 1)
    final_seeds = seed_list(node, "final_seeds", MINIMUM_FINAL_SEEDS)
    if set(seeds) & set(final_seeds):
        raise ConfigError(
            f"tuning.final_seeds must not repeat the stage-1 seeds {sorted(set(seeds) & set(final_seeds))}: "
            "stage 2 reports on fresh seeds, not on the ones that chose the setting."
        )
    metric = node.get("metric", DEFAULT_METRIC)
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"tuning.metric must be a metric's name, got {metric!r}.")
    stage_one = node.get("stage_one", DEFAULT_STAGE_ONE)
    if not isinstance(stage_one, list) or not all(isinstance(item, str) for item in stage_one):
        raise ConfigError(f"tuning.stage_one must be a list of overrides (KEY=VALUE), got {stage_one!r}.")
    conditions = node.get("conditions") or {}
    if not isinstance(conditions, dict):
        raise ConfigError(f"tuning.conditions must map override keys to lists of values, got {conditions!r}.")
    conditions = {key: value if isinstance(value, list) else [value] for key, value in conditions.items()}
    for key, values in conditions.items():
        if not values:
            raise ConfigError(f"tuning.conditions.{key} is empty; give at least one value.")
    optimizers = node.get("optimizers")
    if not isinstance(optimizers, dict) or not optimizers:
        raise ConfigError("tuning.optimizers must map optimizer options (conf/optimizer) to their grids.")
    available = optimizer_options()
    grids, fixed = {}, {}
    for option, grid in optimizers.items():
        if option not in available:
            raise ConfigError(
                f"tuning.optimizers: unknown optimizer {option!r}; available: {', '.join(available)}."
            )
        if not isinstance(grid, dict):
            raise ConfigError(f"tuning.optimizers.{option} must be a mapping of settings, got {grid!r}.")
        grids[option], fixed[option] = split_grid(grid, "optimizer")
    baseline = node.get("baseline")
    if baseline is not None and baseline not in grids:
        raise ConfigError(
            f"tuning.baseline {baseline!r} is not one of the study's optimizers: {list(grids)}."
        )
    return Spec(seeds, final_seeds, metric, list(stage_one), conditions, grids, fixed, baseline)


# ---- Overrides -----------------------------------------------------------------------------------------


def text(value: Any) -> str:
    """A value as a Hydra override writes it (Hydra parses it back to the same value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(text(item) for item in value) + "]"
    return str(value)


def assignments(values: dict[str, Any]) -> list[str]:
    return [f"{key}={text(value)}" for key, value in values.items()]


def label(condition: dict[str, Any]) -> str:
    """A condition as a folder name and a label: ``task.zipf=0.8,task.vocabulary=2000``; ``default``."""
    return ",".join(assignments(condition)) or "default"


def folder_name(condition: dict[str, Any]) -> str:
    """A condition as a folder name that a Hydra override can carry unquoted (no ``=`` or ``,``):
    ``task.vocabulary-1000+task.zipf-0.8``."""
    return "+".join(f"{key}-{text(value)}" for key, value in condition.items()) or "default"


def stage_two_folder(option: str, condition: dict[str, Any]) -> Path:
    """Stage 2's folder of an optimizer option and a condition, relative to the study's folder."""
    folder = Path(STAGE_TWO_DIR) / option
    return folder / folder_name(condition) if condition else folder


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of a grid, in grid order (the first axis slowest)."""
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def canonical_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return ("flag", value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return tuple(canonical_value(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((str(key), canonical_value(item)) for key, item in value.items()))
    return str(value)


def canonical(overrides: list[str]) -> frozenset:
    """The overrides of one run as Hydra reads them, as a set: the same run whatever the spelling
    (``1e-3`` or ``0.001``) or order. Overrides of Hydra's own config (``hydra.*``, ``hydra/...``) are left
    out: a run's ``.hydra/overrides.yaml`` does not hold them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    found = set()
    for override in parser.parse_overrides(list(overrides)):
        if override.key_or_group.split("/")[0].split(".")[0] == "hydra":
            continue
        found.add((override.get_key_element(), canonical_value(override.value())))
    return frozenset(found)


def run_identity(overrides: list[str]) -> frozenset:
    """``canonical`` without the keys that do not change what a run computes (``progress``, ``threads``,
    ...: ``bench.contract.NOT_PART_OF_THE_RUN``): stage 2 must rerun the runs stage 1 tuned."""
    from bench.contract import NOT_PART_OF_THE_RUN

    return frozenset(
        (key, value) for key, value in canonical(overrides) if key.lstrip("+~") not in NOT_PART_OF_THE_RUN
    )


def is_hydra_override(override: str) -> bool:
    key = override.lstrip("+~").split("=")[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def is_spec_override(override: str) -> bool:
    key = override.lstrip("+~").split("=")[0]
    return key == "tuning" or key.startswith("tuning.")


# ---- Configs ------------------------------------------------------------------------------------------


def compose(overrides: list[str], hydra: bool = False):
    """The config ``python -m bench`` composes from ``overrides`` (Hydra's overrides left out unless
    ``hydra``); ConfigError with Hydra's message when it cannot."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    kept = [override for override in overrides if not is_hydra_override(override)]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=kept, return_hydra_config=hydra)
    except Exception as error:  # noqa: BLE001 - Hydra's composition errors, as one paragraph
        reason = " ".join(str(error).split())
        raise ConfigError(f"cannot compose the configuration {' '.join(kept)}: {reason}") from None


@dataclass
class Sweep:
    """One Hydra multirun: its overrides (comma lists sweep) and its folder (``hydra.sweep.dir``)."""

    overrides: list[str]
    folder: Path

    def arguments(self) -> list[str]:
        return ["-m", *self.overrides, f"hydra.sweep.dir={self.folder}"]

    def command(self) -> str:
        return "python -m bench " + " ".join(shlex.quote(item) for item in self.arguments())


@dataclass(frozen=True)
class Point:
    """One run of stage 1: an optimizer option, a condition, a grid point and a seed."""

    optimizer: str
    condition: tuple[tuple[str, Any], ...]
    setting: tuple[tuple[str, Any], ...]
    seed: int


@dataclass
class Study:
    """A study on the command line: the runs' own overrides (``base``), its settings and its folder."""

    base: list[str]
    spec: Spec
    root: Path
    names: dict[str, str] = field(default_factory=dict)  # optimizer option → the runs' optimizer name
    steps: dict[str, int] = field(default_factory=dict)  # optimizer option → training steps of its runs
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # option → axis key → config value
    task: str = ""
    experiment: str | None = None

    # Runs of each stage --------------------------------------------------------------------------------
    def conditions(self) -> list[dict[str, Any]]:
        return grid_points(self.spec.conditions) if self.spec.conditions else [{}]

    def run_overrides(self, option: str, condition: dict[str, Any], setting: dict[str, Any]) -> list[str]:
        """Every override of one run but its seed."""
        return [
            *self.base,
            f"optimizer={option}",
            *assignments(self.spec.fixed[option]),
            *assignments(condition),
            *assignments(setting),
        ]

    def points(self, option: str) -> list[Point]:
        return [
            Point(option, tuple(condition.items()), tuple(setting.items()), seed)
            for condition in self.conditions()
            for setting in grid_points(self.spec.grids[option])
            for seed in self.spec.seeds
        ]

    def point_overrides(self, point: Point) -> list[str]:
        run = self.run_overrides(point.optimizer, dict(point.condition), dict(point.setting))
        return [*run, f"seed={point.seed}", *self.spec.stage_one]

    def stage_one(self) -> list[Sweep]:
        """One multirun per optimizer: its grid × the conditions × the stage-1 seeds."""
        sweeps = []
        for option, axes in self.spec.grids.items():
            swept = {**self.spec.conditions, **axes}
            overrides = [
                *self.base,
                f"optimizer={option}",
                *assignments(self.spec.fixed[option]),
                *(f"{key}={','.join(text(value) for value in values)}" for key, values in swept.items()),
                "seed=" + ",".join(map(str, self.spec.seeds)),
                *self.spec.stage_one,
            ]
            sweeps.append(Sweep(overrides, self.root / STAGE_ONE_DIR / option))
        return sweeps

    def stage_two(self, document: dict[str, Any]) -> list[Sweep]:
        """One multirun per optimizer and condition: the chosen setting × the final seeds."""
        sweeps = []
        for choice in document["choices"]:
            if choice["chosen"] is None:
                continue
            overrides = self.run_overrides(choice["optimizer"], choice["condition"], choice["chosen"])
            overrides.append("seed=" + ",".join(map(str, document["final_seeds"])))
            folder = stage_two_folder(choice["optimizer"], choice["condition"])
            sweeps.append(Sweep(overrides, self.root / folder))
        return sweeps


def study_from_command_line(overrides: list[str]) -> Study:
    """Check the command line and compose what the protocol needs; ConfigError when something is wrong."""
    from omegaconf import OmegaConf

    from bench.preflight import check_names, parse

    parsed = parse(overrides)
    check_names(parsed, multirun=True)
    spec_overrides = [item for item in overrides if is_spec_override(item)]
    run_overrides = [item for item in overrides if not is_spec_override(item)]
    root_given = None
    for override in parsed:
        key = override.key_or_group
        if key == "hydra.sweep.dir":
            root_given = str(override.value())
        elif key in ("optimizer", "seed"):
            raise ConfigError(
                f"'{override.input_line}': the protocol sets {key} itself; choose the optimizers in "
                "tuning.optimizers and the seeds in tuning.seeds and tuning.final_seeds."
            )
        elif override.is_sweep_override():
            raise ConfigError(
                f"'{override.input_line}' lists several values; the protocol decides what is swept: put the "
                "values in tuning.conditions (tuned separately) or in an optimizer's grid."
            )
    base = [item for item in run_overrides if not item.startswith("hydra.sweep.dir=")]
    plain = compose(base, hydra=True)
    settings = compose([*base, *spec_overrides]) if spec_overrides else plain
    node = settings.get("tuning")
    spec = parse_spec(None if node is None else OmegaConf.to_container(node, resolve=True))
    if "tuning" in plain:
        base.append("~tuning")  # the runs do not carry the study's settings (their digests stay put)
    swept = plain.hydra.sweeper.get("params") or {}
    if swept:
        raise ConfigError(
            f"the experiment sweeps {', '.join(sorted(swept))} (hydra.sweeper.params); a tuned study sweeps "
            "only what tuning.conditions and tuning.optimizers name."
        )
    if root_given is None:
        root_given = OmegaConf.to_container(plain.hydra.sweep, resolve=False)["dir"]
        if "${" in root_given:
            raise ConfigError(
                "the study needs a fixed folder to resume in: give hydra.sweep.dir=DIR (a tuned experiment "
                "sets its own)."
            )
    keys = {*spec.conditions, *(key for axes in spec.grids.values() for key in axes)}
    repeated = sorted(key for key in keys if any(item.lstrip("+").startswith(f"{key}=") for item in base))
    if repeated:
        raise ConfigError(f"{', '.join(repeated)} is both set on the command line and tuned; drop one.")
    experiments = [item.split("=", 1)[1] for item in base if item.lstrip("+").startswith("experiment=")]
    study = Study(base, spec, Path(root_given), experiment=experiments[0] if experiments else None)
    for option, axes in spec.grids.items():
        config = compose(study.run_overrides(option, {}, {}))
        study.names[option], study.steps[option] = str(config.optimizer.name), int(config.steps)
        study.task = str(config.task.name)
        study.defaults[option] = {key: OmegaConf.select(config, key, default=None) for key in axes}
        first = study.conditions()[0], grid_points(axes)[0]
        compose([*study.run_overrides(option, *first), f"seed={spec.seeds[0]}", *spec.stage_one])
    return study


# ---- Stage 1's outcomes and the choice --------------------------------------------------------------


@dataclass
class Outcome:
    """What one stage-1 run scored: its status, the final value of the metric (+∞ when it did not finish
    well), the metric read and its folder."""

    status: str
    value: float
    metric: str
    folder: str | None


def final_value(metrics: Path, metric: str) -> tuple[float, str] | None:
    """The value of ``metric`` at its last recorded step in ``metrics.csv`` (else of ``objective``), and the
    metric read; None when neither was recorded."""
    last: dict[str, tuple[int, float]] = {}
    with metrics.open(newline="") as stream:
        for row in csv.DictReader(stream):
            name = row["metric"]
            if name in (metric, FALLBACK_METRIC):
                step = int(row["step"])
                if name not in last or step >= last[name][0]:
                    last[name] = (step, float(row["value"]))
    for name in (metric, FALLBACK_METRIC):
        if name in last:
            return last[name][1], name
    return None


def outcome(folder: Path | None, metric: str, root: Path) -> Outcome:
    """Read one stage-1 run folder (None: not run yet)."""
    if folder is None:
        return Outcome("missing", math.inf, metric, None)
    where = str(folder.relative_to(root))
    try:
        summary = json.loads((folder / "summary.json").read_text())
        status = str(summary["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return Outcome("missing", math.inf, metric, where)  # killed, or still running
    if status != "ok":
        return Outcome(status, math.inf, metric, where)
    found = final_value(folder / "metrics.csv", metric) if (folder / "metrics.csv").exists() else None
    if found is None:
        return Outcome("failed", math.inf, metric, where)
    value, read = found
    return Outcome(status, value if math.isfinite(value) else math.inf, read, where)


def run_folders(folder: Path) -> dict[frozenset, Path]:
    """The run folders of a sweep folder, by their overrides (``.hydra/overrides.yaml``)."""
    found = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*/.hydra/overrides.yaml")):
        try:
            overrides = yaml.safe_load(path.read_text())
            found[canonical([str(item) for item in overrides])] = path.parent.parent
        except (OSError, yaml.YAMLError, ValueError, TypeError, Exception):  # noqa: BLE001 - a broken folder
            continue  # is one more run to do
    return found


def stage_one_outcomes(study: Study) -> dict[Point, Outcome]:
    """Every stage-1 point's outcome, read from its run folder."""
    outcomes = {}
    for option in study.spec.grids:
        folders = run_folders(study.root / STAGE_ONE_DIR / option)
        for point in study.points(option):
            folder = folders.get(canonical(study.point_overrides(point)))
            outcomes[point] = outcome(folder, study.spec.metric, study.root)
    return outcomes


def numeric_axis(values: list[Any]) -> bool:
    return all(isinstance(value, int | float) and not isinstance(value, bool) for value in values)


def at_edge(axes: dict[str, list[Any]], chosen: dict[str, Any]) -> list[str]:
    """Numeric axes of three values or more whose chosen value is the smallest or largest: the best may
    lie outside the grid (widen it)."""
    edges = []
    for key, values in axes.items():
        if len(values) >= 3 and numeric_axis(values) and chosen[key] in (min(values), max(values)):
            edges.append(key)
    return edges


def strict_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def choose(study: Study, outcomes: dict[Point, Outcome]) -> dict[str, Any]:
    """The tuning document (``tuning.json``): the protocol's settings and, per optimizer and condition, the
    grid, every run's score, the budget and the chosen setting (None when every setting scored +∞)."""
    spec = study.spec
    choices = []
    for option, axes in spec.grids.items():
        for condition in study.conditions():
            scores = []
            for setting in grid_points(axes):
                found = [
                    outcomes[Point(option, tuple(condition.items()), tuple(setting.items()), seed)]
                    for seed in spec.seeds
                ]
                values = [item.value for item in found]
                mean = math.inf if any(math.isinf(value) for value in values) else sum(values) / len(values)
                scores.append(
                    {
                        "setting": setting,
                        "seeds": list(spec.seeds),
                        "values": [strict_number(value) for value in values],
                        "statuses": [item.status for item in found],
                        "folders": [item.folder for item in found],
                        "mean": strict_number(mean),
                    }
                )
            means = [math.inf if score["mean"] is None else score["mean"] for score in scores]
            best = min(range(len(scores)), key=lambda index: (means[index], index))
            chosen = scores[best]["setting"] if math.isfinite(means[best]) else None
            metrics = sorted(
                {
                    outcomes[point].metric
                    for point in study.points(option)
                    if dict(point.condition) == condition and outcomes[point].status == "ok"
                }
            )
            folder = stage_two_folder(option, condition)
            choices.append(
                {
                    "optimizer": option,
                    "name": study.names.get(option, option),
                    "condition": condition,
                    "condition_label": label(condition),
                    "metric": metrics[0] if len(metrics) == 1 else ", ".join(metrics) or spec.metric,
                    "grid": axes,
                    "fixed": spec.fixed[option],
                    "defaults": study.defaults.get(option, {}),
                    "budget": {
                        "settings": len(scores),
                        "seeds": len(spec.seeds),
                        "runs": len(scores) * len(spec.seeds),
                        "steps": study.steps.get(option),
                    },
                    "scores": scores,
                    "chosen": chosen,
                    "score": strict_number(means[best]),
                    "at_edge": at_edge(axes, chosen) if chosen is not None else [],
                    "stage_two": str(folder),
                }
            )
    return {
        "protocol": "bench.tune",
        "experiment": study.experiment,
        "task": study.task,
        "overrides": study.base,
        "metric": spec.metric,
        "rule": rule_text(spec.metric),
        "seeds": spec.seeds,
        "final_seeds": spec.final_seeds,
        "stage_one": spec.stage_one,
        "conditions": spec.conditions,
        "baseline": spec.baseline,
        "choices": choices,
    }


def write_tuning(root: Path, document: dict[str, Any]) -> Path:
    """``ROOT/tuning.json``, written atomically (strict JSON: +∞ is null)."""
    from bench.results import atomic_write_text, strict

    path = Path(root) / TUNING_FILE
    atomic_write_text(path, json.dumps(strict(document), indent=2, allow_nan=False) + "\n")
    return path


def load_tuning(root: Path) -> dict[str, Any]:
    path = Path(root) / TUNING_FILE
    try:
        return json.loads(path.read_text())
    except OSError:
        raise ConfigError(f"no {path}: run stage 1 first (python -m bench.tune ... --stage 1).") from None
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); run stage 1 again to rewrite it.") from None


def choice_lines(document: dict[str, Any]) -> list[str]:
    """One line per optimizer and condition: what was chosen, with its score and budget."""
    lines = []
    for choice in document["choices"]:
        where = "" if choice["condition_label"] == "default" else f" [{choice['condition_label']}]"
        budget = choice["budget"]
        spent = (
            f"{budget['runs']} runs ({budget['settings']} settings × {budget['seeds']} seeds) of "
            f"{budget['steps']} steps"
        )
        if choice["chosen"] is None:
            lines.append(f"  {choice['name']}{where}: nothing chosen, every setting scored +inf; {spent}")
            continue
        setting = " ".join(assignments(choice["chosen"]))
        edge = f"  (at the edge of the grid: {', '.join(choice['at_edge'])})" if choice["at_edge"] else ""
        lines.append(
            f"  {choice['name']}{where}: {setting}  mean final {choice['metric']} {choice['score']:.4g}; "
            f"{spent}{edge}"
        )
    return lines


# ---- Running -------------------------------------------------------------------------------------------


def run_sweep(sweep: Sweep) -> int:
    """Run one multirun of ``python -m bench`` in this process (its imports are paid once); its exit code.

    ``runpy`` runs ``bench/__main__.py`` as the main module, as ``python -m bench`` would, so that Hydra
    finds the configs beside it; Hydra's global state is cleared before and after.
    """
    from hydra.core.global_hydra import GlobalHydra

    from bench import sweep as sweeps

    print(f"[tune] {sweep.command()}", file=sys.stderr, flush=True)
    saved = sys.argv
    GlobalHydra.instance().clear()
    sweeps.LAUNCHED = False
    sys.argv = ["bench", *sweep.arguments()]
    try:
        runpy.run_module("bench", run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
    return 0


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m bench.tune",
        description="Tune every optimizer of a study by the same rule (stage 1), write tuning.json, and "
        "rerun the chosen settings with fresh seeds (stage 2). Then: python -m bench.report ROOT.",
        epilog="Example: python -m bench.tune +experiment=optimizers_toy_tuned",
    )
    result.add_argument("overrides", nargs="*", help="Hydra overrides: +experiment=NAME and any KEY=VALUE")
    result.add_argument(
        "--stage",
        choices=("1", "2", "both"),
        default="both",
        help="1: the grid and tuning.json; 2: the chosen settings from tuning.json; both (default)",
    )
    result.add_argument("--dry-run", action="store_true", help="print the sweeps' commands, run nothing")
    return result


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_intermixed_args(argv)
    try:
        study = study_from_command_line(arguments.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = study.root
    if arguments.dry_run:
        if arguments.stage in ("1", "both"):
            print(f"# stage 1: {sum(len(study.points(option)) for option in study.spec.grids)} runs")
            print("\n".join(sweep.command() for sweep in study.stage_one()))
        if arguments.stage == "2" or (root / TUNING_FILE).exists():
            try:
                document = load_tuning(root)
            except ConfigError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            print("# stage 2, from " + str(root / TUNING_FILE))
            print("\n".join(sweep.command() for sweep in study.stage_two(document)))
        return 0
    if arguments.stage in ("1", "both"):
        for sweep in study.stage_one():
            code = run_sweep(sweep)
            if code:
                return code
        outcomes = stage_one_outcomes(study)
        unfinished = [point for point, found in outcomes.items() if found.status in NOT_FINISHED]
        if unfinished:
            shown = "; ".join(
                " ".join(study.point_overrides(point)[len(study.base) :]) for point in unfinished[:5]
            )
            more = " ..." if len(unfinished) > 5 else ""
            print(
                f"error: {len(unfinished)} stage-1 runs did not finish ({shown}{more}); run the same command "
                "again to resume them.",
                file=sys.stderr,
            )
            return 1
        document = choose(study, outcomes)
        path = write_tuning(root, document)
        print(f"[tune] stage 1 done: {path}\n" + "\n".join(choice_lines(document)), file=sys.stderr)
    if arguments.stage in ("2", "both"):
        try:
            document = load_tuning(root)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if run_identity(document.get("overrides") or []) != run_identity(study.base):
            print(
                f"error: {root / TUNING_FILE} tuned the runs of {' '.join(document.get('overrides') or [])}, "
                f"not of {' '.join(study.base)}: run stage 1 with these overrides first.",
                file=sys.stderr,
            )
            return 2
        for sweep in study.stage_two(document):
            code = run_sweep(sweep)
            if code:
                return code
        skipped = [choice["name"] for choice in document["choices"] if choice["chosen"] is None]
        if skipped:
            print(f"[tune] not rerun (every setting scored +inf): {', '.join(skipped)}", file=sys.stderr)
        print(f"[tune] stage 2 done; report: python -m bench.report {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
