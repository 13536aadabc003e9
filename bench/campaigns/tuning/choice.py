"""Stage 1's outcomes, read from its run folders, and the choice written to ``tuning.json``."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.campaigns.tuning.plan import (
    Point,
    TuningPlan,
    assignments,
    canonical,
    grid_points,
    label,
    stage_two_folder,
)
from bench.campaigns.tuning.spec import FALLBACK_METRIC, STAGE_ONE_DIR, rule_text
from bench.formats.contract import METRICS_FILE, OK, SUMMARY_FILE, TUNING_FILE
from bench.formats.errors import ConfigError

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
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        status = str(summary["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return Outcome("missing", math.inf, metric, where)  # killed, or still running
    if status != OK:
        return Outcome(status, math.inf, metric, where)
    found = final_value(folder / METRICS_FILE, metric) if (folder / METRICS_FILE).exists() else None
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


def stage_one_outcomes(study: TuningPlan) -> dict[Point, Outcome]:
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


def choose(study: TuningPlan, outcomes: dict[Point, Outcome]) -> dict[str, Any]:
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
                    if dict(point.condition) == condition and outcomes[point].status == OK
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
        "heldout": spec.heldout,
        "choices": choices,
    }


def write_tuning(root: Path, document: dict[str, Any]) -> Path:
    """``ROOT/tuning.json``, written atomically (strict JSON: +∞ is null)."""
    from bench.formats.files import atomic_write_text, strict

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
