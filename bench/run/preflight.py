"""Checks on the command line of ``python -m bench`` made before Hydra runs, so that bad input gets one
clear paragraph and exit code 2 instead of Hydra's own message (exit 1), and so that a sweep with one bad
name in a comma list is refused before any of its runs starts.

Checked here: the syntax of every override (with Hydra's own override parser), the option names of our
config groups (``task``, ``estimator``, ``optimizer``, ``experiment``: every folder of ``conf/``), a
comma list without ``-m``, every key override against the composed config (``check_keys``: with or
without ``+``, "did you mean" the closest key; a custom task's factory arguments and the nodes experiments
add pass), the names that become folder names, whether the results folder can be written, and, where the
command line sets ``task.sparse``, whether every optimizer it names takes the task's gradients
(``bench.run.build.check_gradients``: ``task=embedding task.sparse=true`` with an optimizer that takes
dense gradients only). Everything else (values, the fit of an estimator to a task, data files) is checked
when the run is built (``bench.run.build.setup``).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from bench.formats.configs import CONF_DIR, compose, options
from bench.formats.errors import ConfigError
from bench.formats.names import check_name
from bench.run.build import check_gradients
from bench.run.limits import NAMED

# The overrides whose every value the gradients check composes (a sweep over them is expanded); other swept
# keys do not change which gradients a task gives or an optimizer takes, and take their first value.
GRADIENT_KEYS = ("optimizer", "optimizer@optimizer.inner", "task", "task.sparse", "experiment")


def default_groups() -> set[str]:
    """Groups chosen in the defaults list of ``conf/config.yaml`` (``task``, ``estimator``, ``optimizer``)."""
    groups = set()
    for entry in OmegaConf.load(CONF_DIR / "config.yaml").get("defaults", []):
        if not isinstance(entry, str):
            groups.update(str(key).split("@")[0].lstrip("/") for key in entry)
    return groups


def parse(arguments: list[str]) -> list[Override]:
    parser = OverridesParser.create()
    parsed = []
    for argument in arguments:
        try:
            parsed.extend(parser.parse_overrides([argument]))
        except OverrideParseException as error:
            reason = " ".join(str(error).split("See https://")[0].split())
            raise ConfigError(
                f"cannot read the command-line override '{argument}': {reason}. Overrides are KEY=VALUE "
                "(e.g. task=toy steps=100), a comma list such as estimator=rloo,st sweeps with -m; see "
                "https://hydra.cc/docs/advanced/override_grammar/basic/."
            ) from None
    return parsed


def choices(override: Override) -> list[str] | None:
    """The option names an override of a config group asks for; None when they cannot be listed here."""
    if override.value_type == ValueType.ELEMENT:
        value = override.value()
        return [value] if isinstance(value, str) else None
    if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        return list(override.sweep_string_iterator())
    return None  # glob(...) and ranges: Hydra expands them against the files itself


def check_names(overrides: list[Override], multirun: bool) -> None:
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    in_defaults = default_groups()
    for override in overrides:
        if not multirun and override.is_sweep_override():
            raise ConfigError(
                f"'{override.input_line}' lists several values, which makes a sweep: add -m (python -m "
                f"bench -m {override.input_line} ...) to run one run per value, or give a single value."
            )
        group = override.key_or_group
        if group not in groups or override.is_delete():
            continue
        if group not in in_defaults and not override.is_add() and not override.is_force_add():
            raise ConfigError(
                f"'{override.input_line}': the {group} group is not chosen by default, so it is added with a "
                f"plus sign: +{override.input_line}."
            )
        available = options(group)
        unknown = [name for name in choices(override) or [] if name not in available]
        if unknown:
            listed = ", ".join(available) or f"none yet (add YAML files to conf/{group}/)"
            plural = "s" if len(unknown) > 1 else ""
            close = [match for name in unknown for match in difflib.get_close_matches(name, available, 1)]
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ConfigError(
                f"unknown {group}{plural} {', '.join(repr(name) for name in unknown)} in "
                f"'{override.input_line}'{hint}. Available {group} options: {listed}."
            )


def results_folder(overrides: list[Override], multirun: bool) -> str:
    """The results folder as configured (command line, else an added experiment, else conf/config.yaml)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for override in reversed(overrides):
        if override.key_or_group == key and isinstance(override.value(), str):
            return override.value()
    sources = [CONF_DIR / "config.yaml"]
    sources += [
        CONF_DIR / "experiment" / f"{name}.yaml"
        for override in overrides
        if override.key_or_group == "experiment"
        for name in choices(override) or []
    ]
    folder = ""
    for source in sources:
        node = OmegaConf.to_container(OmegaConf.load(source), resolve=False)  # keep ${now:...} unresolved
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        folder = str(node) if node is not None else folder
    return folder


def check_writable(folder: str) -> None:
    """Refuse a results folder that cannot be created or written, before Hydra tries (and fails) to.

    Only the part before the first interpolation (``${now:...}``) is known now; its nearest existing
    ancestor must be a folder in which a file can be created (tried for real: permission bits do not tell
    about read-only file systems, /proc, or a root user).
    """
    literal = folder.split("${")[0]
    known = Path(literal) if literal.endswith("/") or literal == folder else Path(literal).parent
    target = Path.cwd() / known
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            problem = f"{existing} is not writable ({error.strerror or error})"
    if problem is not None:
        raise ConfigError(
            f"cannot write the results into {folder}: {problem}. Choose another folder with "
            "hydra.run.dir=PATH (a single run) or hydra.sweep.dir=PATH (a sweep with -m)."
        )


def check_sparse_gradients(overrides: list[Override]) -> None:
    """Where the command line sets ``task.sparse``: every combination of its optimizers, tasks and sparse
    settings composed, and refused (``bench.run.build.check_gradients``) when an optimizer does not take
    the task's gradients, naming those that do."""
    if not any(override.key_or_group == "task.sparse" for override in overrides):
        return
    axes: list[list[str]] = []
    for override in overrides:
        if override.key_or_group.startswith("hydra") or override.is_delete():
            continue
        key = override.get_key_element()  # with its + or ++
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            if override.key_or_group not in GRADIENT_KEYS:
                values = values[:1]
        else:
            values = [override.get_value_element_as_str()]
        axes.append([f"{key}={value}" for value in values])
    for combination in itertools.product(*axes):
        try:
            config = compose(list(combination))
        except Exception:  # noqa: BLE001 - Hydra reports its own errors when it composes for the run
            return
        check_gradients(config)


CUSTOM_TARGET = "bench.tasks.custom.from_factory"
ADDABLE = ("task.report",)
"""Keys any config may gain with ``+``: a task's report declaration (``bench.report.declarations``)."""


@functools.lru_cache(maxsize=1)
def experiment_nodes() -> set[str]:
    """Top-level nodes that experiment files add on purpose (``study``, ``tuning``, ...): not in
    ``conf/config.yaml``, so ``+NODE.KEY=VALUE`` adds them by hand."""
    base = set(OmegaConf.load(CONF_DIR / "config.yaml").keys())
    found = set()
    for path in (CONF_DIR / "experiment").glob("*.yaml"):
        node = OmegaConf.load(path)
        found |= {str(key) for key in node.keys() if key not in ("defaults", "hydra")}
    return found - base


def key_problem(config: DictConfig, override: Override) -> str | None:
    """Why the key of ``override`` is not in ``config`` (with a close match among its siblings), or None.

    Known: a key of the composed config; under a custom task's node, any key (its factory's arguments); a
    top-level node that experiments add (``experiment_nodes``), given with ``+``."""
    parts = override.key_or_group.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None if node is None else f"{'.'.join(parts[:depth])} is a value, not a node of keys"
        if part in node:
            node = node[part]
            continue
        if depth == 0 and (override.is_add() or override.is_force_add()) and part in experiment_nodes():
            return None
        if ".".join(parts[: depth + 1]) in ADDABLE and (override.is_add() or override.is_force_add()):
            return None
        if depth == 1 and parts[0] == "task" and node.get("_target_") == CUSTOM_TARGET:
            if override.is_add() or override.is_force_add():
                return None  # an argument of the user's factory
            return (
                f"task=custom passes keys it does not have to its factory with a plus sign: "
                f"+{override.input_line}"
            )
        prefix = ".".join(parts[:depth])
        siblings = [str(key) for key in node.keys()]
        close = difflib.get_close_matches(part, siblings, 1)
        hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])}?)" if close else ""
        where = f"{prefix} has" if prefix else "the config has"
        return f"there is no key {override.key_or_group}{hint}; {where} {', '.join(sorted(siblings))}"
    return None


def compositions(overrides: list[Override]) -> list[tuple[str, list[str]]]:
    """The group choices to compose (each with a description): every group at its first value, then each
    further value of a swept group with the others at their first, so that every choice is composed once."""
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    chosen = [
        (override, choices(override) or [override.get_value_element_as_str()])
        for override in overrides
        if override.key_or_group in groups and not override.is_delete()
    ]
    first = [f"{override.get_key_element()}={values[0]}" for override, values in chosen]
    found = [("", first)]
    for index, (override, values) in enumerate(chosen):
        for value in values[1:]:
            varied = [*first[:index], f"{override.get_key_element()}={value}", *first[index + 1 :]]
            found.append((f" (with {override.key_or_group}={value})", varied))
    return found


def check_keys(overrides: list[Override]) -> None:
    """Every key override names a key of the composed config, with or without ``+`` (``+probe.draw=64``
    would add a key nothing reads); ``task.name``, ``estimator.name`` and ``optimizer.name`` are safe names
    (they become folder and file names). ConfigError with the closest key."""
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    keys = [
        override
        for override in overrides
        if override.key_or_group not in groups
        and not override.is_delete()
        and not override.key_or_group.startswith("hydra")
        and "/" not in override.key_or_group
    ]
    for override in keys:
        if override.key_or_group in NAMED:
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
            for value in values or [override.get_value_element_as_str()]:
                check_name(value, override.key_or_group)
    if not keys:
        return
    if any(override.key_or_group in groups for override in overrides) or any(
        override.key_or_group.split(".")[0] in groups for override in keys
    ):
        configs = compositions(overrides)
    else:  # top-level keys only, no group chosen: conf/config.yaml's own keys, without composing
        base = OmegaConf.load(CONF_DIR / "config.yaml")
        kept = [key for key in base if key not in ("defaults", "hydra")]
        configs = [("", OmegaConf.masked_copy(base, kept))]
    for description, chosen in configs:
        try:
            config = compose(chosen) if isinstance(chosen, list) else chosen
        except Exception:  # noqa: BLE001 - Hydra reports its own errors when it composes for the run
            return
        for override in keys:
            problem = key_problem(config, override)
            if problem is not None:
                raise ConfigError(
                    f"unknown key in '{override.input_line}'{description}: {problem}. (With +, Hydra would "
                    f"add it and nothing would read it.) python -m bench --cfg job lists the keys."
                )


def preflight(arguments: list[str]) -> None:
    """Check the command line of ``python -m bench``; raises ConfigError with a one-paragraph message."""
    args, _ = get_args_parser().parse_known_args(arguments)
    if args.help or args.hydra_help or args.shell_completion or args.experimental_rerun:
        return
    if args.config_dir or args.config_path or args.config_name:
        return  # other config folders: their groups are not ours to list
    overrides = parse(args.overrides)
    if any(override.key_or_group.startswith("hydra.searchpath") for override in overrides):
        return
    check_names(overrides, bool(args.multirun))
    check_keys(overrides)
    check_sparse_gradients(overrides)
    if args.cfg is None and args.info is None:
        check_writable(os.path.expanduser(results_folder(overrides, bool(args.multirun))))
