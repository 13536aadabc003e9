"""A tuned study given on the command line alone, for any task (``python -m bench.tune --optimizers ...``).

    python -m bench.tune task=custom task.factory=my_task:make_task \\
        --optimizers adam,lookahead --grid optimizer.lr=1e-4:1e-1:7

``--optimizers`` names the optimizer options (``conf/optimizer``); each ``--grid
[OPTION:]optimizer.KEY=VALUES`` adds an axis to every optimizer's grid (or to OPTION's alone), VALUES being
``LOW:HIGH:N`` (N values spaced evenly on a log scale from LOW to HIGH, at 3 significant digits) or a comma
list (``5,10``). An optimizer that wraps another (Lookahead: ``optimizer.inner``) takes the key of its inner
optimizer when it has none of its own, so ``optimizer.lr`` tunes Lookahead's inner learning rate.
``--seeds`` and ``--final-seeds`` give the seeds of the two stages (default ``DEFAULT_SEEDS`` and
``DEFAULT_FINAL_SEEDS``), ``--metric`` the score. The result is the ``tuning`` node an experiment would hold
(``bench.campaigns.tuning.spec``); with an experiment on the command line, these options replace its
optimizers, grids, seeds or metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from bench.formats.errors import ConfigError

DEFAULT_SEEDS = [0, 1]
DEFAULT_FINAL_SEEDS = [100, 101, 102, 103, 104]
GRID_HELP = (
    "--grid [OPTION:]optimizer.KEY=VALUES, VALUES being LOW:HIGH:N (N log-spaced values) or a comma list, "
    "e.g. --grid optimizer.lr=1e-4:1e-1:7 --grid lookahead:optimizer.k=5,10"
)


@dataclass
class CommandLineTuning:
    """The options of ``python -m bench.tune`` that make or change the ``tuning`` node."""

    optimizers: list[str] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    final_seeds: list[int] | None = None
    metric: str | None = None

    def given(self) -> bool:
        return bool(self.optimizers or self.grids or self.seeds or self.final_seeds or self.metric)


def seed_list(text: str, option: str) -> list[int]:
    """``0,1,2`` as whole numbers; ConfigError naming ``option`` otherwise."""
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(
            f"{option} {text!r}: expected whole numbers separated by commas, e.g. 0,1."
        ) from None


def log_spaced(low: float, high: float, count: int) -> list[float]:
    """``count`` values from ``low`` to ``high`` evenly spaced on a log scale, at 3 significant digits."""
    if count == 1:
        return [float(f"{low:.3g}")]
    ratio = math.log(high / low) / (count - 1)
    return [float(f"{low * math.exp(ratio * index):.3g}") for index in range(count)]


def grid_values(text: str, item: str) -> list[Any]:
    """The values of one ``--grid`` item: ``LOW:HIGH:N`` or a comma list (each read as YAML: 5, 0.5, true)."""
    parts = text.split(":")
    if len(parts) == 3:
        try:
            low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ConfigError(
                f"--grid {item!r}: LOW:HIGH:N needs two numbers and a whole number. {GRID_HELP}"
            ) from None
        if not (0 < low < high and math.isfinite(high) and count >= 1):
            raise ConfigError(f"--grid {item!r}: LOW:HIGH:N needs 0 < LOW < HIGH and N >= 1. {GRID_HELP}")
        return log_spaced(low, high, count)
    values = []
    for part in text.split(","):
        try:
            value = yaml.safe_load(part) if part.strip() else None
        except yaml.YAMLError:
            value = part
        if value is None or isinstance(value, dict | list):
            raise ConfigError(f"--grid {item!r}: {part!r} is not a value. {GRID_HELP}")
        values.append(value)
    if len(set(map(str, values))) != len(values):
        raise ConfigError(f"--grid {item!r} repeats a value.")
    return values


def parse_grid_item(item: str, options: list[str]) -> tuple[str | None, str, list[Any]]:
    """``[OPTION:]optimizer.KEY=VALUES`` as (the option or None for all, the key, the values)."""
    assignment, option = item, None
    head, colon, rest = item.partition(":")
    if colon and "=" not in head:
        option, assignment = head, rest
        if option not in options:
            raise ConfigError(f"--grid {item!r}: {option!r} is not among --optimizers {','.join(options)}.")
    key, equals, text = assignment.partition("=")
    if not equals or not text:
        raise ConfigError(f"--grid {item!r} is not KEY=VALUES. {GRID_HELP}")
    if not key.startswith("optimizer.") or len(key) == len("optimizer."):
        raise ConfigError(
            f"--grid {item!r}: a grid tunes the optimizer's settings (optimizer.KEY); settings of the task "
            "or the estimator are conditions, tuned separately: tuning.conditions in an experiment config."
        )
    return option, key, grid_values(text, item)


def nested(axes: dict[str, list[Any]]) -> dict[str, Any]:
    """``{"optimizer.inner.lr": [...]}`` as the nested grid of ``tuning.optimizers.<option>``."""
    node: dict[str, Any] = {}
    for key, values in axes.items():
        parts = key.split(".")[1:]
        inner = node
        for part in parts[:-1]:
            inner = inner.setdefault(part, {})
        inner[parts[-1]] = values
    return node


def tuning_node(
    options: CommandLineTuning, node: dict[str, Any] | None, has_key: Callable[[str, str], bool]
) -> dict[str, Any]:
    """The ``tuning`` node from the command line's options, over an experiment's ``node`` (None: none).

    ``has_key(option, key)`` says whether the optimizer option's config has ``key`` (``optimizer.lr``); a
    key it lacks goes to its inner optimizer (``optimizer.inner.lr``) when that has it."""
    result = dict(node or {})
    result.setdefault("seeds", list(DEFAULT_SEEDS))
    result.setdefault("final_seeds", list(DEFAULT_FINAL_SEEDS))
    if options.seeds is not None:
        result["seeds"] = options.seeds
    if options.final_seeds is not None:
        result["final_seeds"] = options.final_seeds
    if options.metric:
        result["metric"] = options.metric
    chosen = options.optimizers or list((node or {}).get("optimizers") or {})
    if not chosen:
        raise ConfigError(
            "no optimizers to tune: give --optimizers adam,lookahead (options of conf/optimizer) and "
            f"{GRID_HELP}, or an experiment with a tuning node (+experiment=optimizers_toy_tuned)."
        )
    if options.optimizers or options.grids:
        previous = (node or {}).get("optimizers") or {}
        grids: dict[str, dict[str, Any]] = {}
        parsed = [parse_grid_item(item, chosen) for item in options.grids]
        for option in chosen:
            axes: dict[str, list[Any]] = {}
            for only, key, values in parsed:
                if only is not None and only != option:
                    continue
                inner = "optimizer.inner." + key.removeprefix("optimizer.")
                if not has_key(option, key) and has_key(option, inner):
                    key = inner
                elif not has_key(option, key):
                    raise ConfigError(f"--grid {key}: optimizer {option!r} has no setting {key}.")
                axes[key] = values
            grid = {**previous.get(option, {}), **nested(axes)} if not options.optimizers else nested(axes)
            if not grid:
                raise ConfigError(f"optimizer {option!r} has no grid: {GRID_HELP}")
            grids[option] = grid
        result["optimizers"] = grids
    if result.get("baseline") not in result["optimizers"]:
        result["baseline"] = next(iter(result["optimizers"]))  # the report's paired differences: the first
    return result
