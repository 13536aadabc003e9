"""A tuned study on the command line (``TuningPlan``): the runs of each stage, as Hydra multiruns."""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.campaigns.tuning.spec import HELDOUT_DIR, STAGE_ONE_DIR, STAGE_TWO_DIR, Spec, parse_spec
from bench.formats.configs import compose as compose_config
from bench.formats.errors import ConfigError

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


def stage_two_folder(option: str, condition: dict[str, Any], stage: str = STAGE_TWO_DIR) -> Path:
    """Stage 2's folder of an optimizer option and a condition, relative to the study's folder (``stage``:
    the held-out reruns' folder instead)."""
    folder = Path(stage) / option
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
    ...: ``bench.formats.contract.NOT_PART_OF_THE_RUN``): stage 2 must rerun the runs stage 1 tuned."""
    from bench.formats.contract import NOT_PART_OF_THE_RUN

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
    kept = [override for override in overrides if not is_hydra_override(override)]
    try:
        return compose_config(kept, hydra=hydra)
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
class TuningPlan:
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

    def stage_two(self, document: dict[str, Any], heldout: bool = False) -> list[Sweep]:
        """One multirun per optimizer and condition: the chosen setting × the final seeds; with ``heldout``,
        the same on the held-out variant (``tuning.heldout``) into ``heldout/`` (none without a variant)."""
        if heldout and not self.spec.heldout:
            return []
        sweeps = []
        for choice in document["choices"]:
            if choice["chosen"] is None:
                continue
            overrides = self.run_overrides(choice["optimizer"], choice["condition"], choice["chosen"])
            if heldout:  # the variant's values win over the condition's and the study's own
                keys = set(self.spec.heldout)
                overrides = [item for item in overrides if item.lstrip("+").split("=")[0] not in keys]
                overrides += assignments(self.spec.heldout)
            overrides.append("seed=" + ",".join(map(str, document["final_seeds"])))
            stage = HELDOUT_DIR if heldout else STAGE_TWO_DIR
            folder = stage_two_folder(choice["optimizer"], choice["condition"], stage)
            sweeps.append(Sweep(overrides, self.root / folder))
        return sweeps


def group_value(override: str, group: str) -> str | None:
    """The option an override chooses for a config group (``task=custom``: ``custom``), else None."""
    key, equals, value = override.partition("=")
    return value if equals and key.lstrip("+") == group else None


def task_reset(base: list[str]) -> list[str]:
    """Overrides that undo what an experiment set in the task node when the command line chose another task.

    An experiment (``# @package _global_``) that chooses a task and sets its keys (``task: {dim: 16}``) sets
    them on whatever task the command line chooses instead: ``+experiment=optimizers_toy_tuned task=custom``
    would hand ``dim=16`` to the custom task's factory. ``task=`` on the command line resets the task node:
    each top-level task key whose value is not the one that task and the command line's own ``task.*``
    overrides give is set back to it (``task.KEY=VALUE``) or deleted (``~task.KEY``)."""
    from omegaconf import OmegaConf

    chosen = [value for item in base if (value := group_value(item, "task")) is not None]
    experiments = [item for item in base if group_value(item, "experiment") is not None]
    if not chosen or not experiments:
        return []
    others = [item for item in base if item.lstrip("+~").split("=")[0].split(".")[0] != "task"]
    if str(compose(others, hydra=True).hydra.runtime.choices.task) == chosen[-1]:
        return []  # the experiment's own task: its settings are meant for it
    mixed = OmegaConf.to_container(compose(base).task, resolve=False)
    clean = OmegaConf.to_container(
        compose([item for item in base if item not in experiments]).task, resolve=False
    )
    reset = []
    for key, value in mixed.items():
        if key not in clean:
            reset.append(f"~task.{key}")
        elif value != clean[key]:
            if isinstance(clean[key], dict):
                raise ConfigError(
                    f"the experiment sets task.{key} for its own task, and task={chosen[-1]} has a "
                    f"task.{key} of its own: set it on the command line (task.{key}.KEY=VALUE) or drop the "
                    "experiment."
                )
            reset.append(f"task.{key}={text(clean[key])}")
    return reset


def plan_from_command_line(overrides: list[str], options: Any = None) -> TuningPlan:
    """Check the command line and compose what the protocol needs; ConfigError when something is wrong.

    ``options``: a ``bench.campaigns.tuning.command_line.CommandLineTuning`` (``--optimizers``, ``--grid``,
    ...), which makes the study's ``tuning`` node or changes an experiment's."""
    from omegaconf import OmegaConf

    from bench.campaigns.tuning.command_line import tuning_node
    from bench.formats.names import safe_name
    from bench.run.preflight import check_names, parse

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
    base += task_reset(base)  # task= on the command line: the experiment's task keys do not leak into it
    plain = compose(base, hydra=True)
    settings = compose([*base, *spec_overrides]) if spec_overrides else plain
    node = settings.get("tuning")
    node = None if node is None else OmegaConf.to_container(node, resolve=True)
    if options is not None and options.given():
        configs: dict[str, Any] = {}

        def has_key(option: str, key: str) -> bool:
            if option not in configs:
                configs[option] = compose([*base, f"optimizer={option}"])
            return OmegaConf.select(configs[option], key, default=None) is not None

        node = tuning_node(options, node, has_key)
    spec = parse_spec(node)
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
        if "${" in root_given and node is not None and "tuning" not in plain:  # the command line's study
            root_given = f"results/tuned/{safe_name(plain.task.name)}"
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
    study = TuningPlan(base, spec, Path(root_given), experiment=experiments[0] if experiments else None)
    for option, axes in spec.grids.items():
        config = compose(study.run_overrides(option, {}, {}))
        study.names[option], study.steps[option] = str(config.optimizer.name), int(config.steps)
        study.task = str(config.task.name)
        study.defaults[option] = {key: OmegaConf.select(config, key, default=None) for key in axes}
        first = study.conditions()[0], grid_points(axes)[0]
        compose([*study.run_overrides(option, *first), f"seed={spec.seeds[0]}", *spec.stage_one])
    return study
