"""The ``tuning`` node of a tuned study, checked: seeds, score, grids, conditions (``parse_spec``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.formats.configs import options
from bench.formats.contract import INTERRUPTED, TUNING_HELDOUT_DIR, TUNING_STAGE_ONE_DIR, TUNING_STAGE_TWO_DIR
from bench.formats.errors import ConfigError

STAGE_ONE_DIR, STAGE_TWO_DIR, HELDOUT_DIR = TUNING_STAGE_ONE_DIR, TUNING_STAGE_TWO_DIR, TUNING_HELDOUT_DIR
MINIMUM_FINAL_SEEDS = 5
DEFAULT_METRIC = "validation_objective"
FALLBACK_METRIC = "objective"
DEFAULT_STAGE_ONE = ["probe.every=0"]
SPEC_KEYS = ("seeds", "final_seeds", "metric", "stage_one", "conditions", "optimizers", "baseline", "heldout")
NOT_FINISHED = (INTERRUPTED, "missing")
"""Stage-1 outcomes that leave the grid incomplete: the run is to be done (re-running resumes it)."""


def rule_text(metric: str) -> str:
    """The selection rule, as tuning.json and the report state it."""
    return (
        f"lowest mean over the stage-1 seeds of the final {metric} (its value at the last step; "
        f"{FALLBACK_METRIC} where a task records no {metric}); a run that diverged, failed or was skipped "
        "scores +inf, so a setting with such a seed is never chosen over one without; ties go to the first "
        "setting in grid order"
    )


@dataclass(frozen=True)
class Spec:
    """The ``tuning`` node of a study, checked: seeds of the two stages, the score, stage 1's own overrides,
    the conditions tuned separately (override key → values), per optimizer option its grid (override
    key → values) and fixed settings (override key → value), and the held-out variant (override key →
    value: a problem the settings were not tuned on, where the chosen settings rerun with the final seeds;
    empty: none)."""

    seeds: list[int]
    final_seeds: list[int]
    metric: str
    stage_one: list[str]
    conditions: dict[str, list[Any]]
    grids: dict[str, dict[str, list[Any]]]
    fixed: dict[str, dict[str, Any]]
    baseline: str | None
    heldout: dict[str, Any]


def optimizer_options() -> list[str]:
    return options("optimizer")


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
            "python -m bench.tune +experiment=optimizers_toy_tuned (see bench/campaigns/tuning/)."
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
    heldout = node.get("heldout") or {}
    if not isinstance(heldout, dict) or any(isinstance(value, list | dict) for value in heldout.values()):
        raise ConfigError(
            "tuning.heldout must map override keys to single values (the variant the chosen settings are "
            f"rerun on, e.g. task.zipf: 1.3), got {heldout!r}."
        )
    return Spec(seeds, final_seeds, metric, list(stage_one), conditions, grids, fixed, baseline, heldout)
