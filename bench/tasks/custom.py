"""Your own task, built by your own code: ``python -m bench task=custom task.factory=MODULE:FUNCTION``.

``factory`` names a callable that returns a ``bench.tasks.base.Task`` (the protocol is documented there and
in README.md, "Bring your own task"). It may be written

- ``my_package.my_module:make_task`` (or ``my_package.my_module.make_task``): any importable callable, a
  function or a ``Task`` subclass; the current directory is importable (``python -m`` puts it on the path);
- ``path/to/my_task.yaml``: a YAML file of your own whose ``_target_`` names the callable and whose other
  keys are its arguments (Hydra's ``instantiate``).

Every other key of the task config is passed to the factory as a keyword argument, so
``+task.dim=8`` calls ``make_task(dim=8)``; ``task.name=my_task`` labels the results.

The factory's task is checked before anything runs (``check_task``: it is a ``Task``, it declares a latent
kind the estimators know and a reference kind, it has trainable and probed parameters, and it overrides the
methods the protocol needs), each failure a ``ConfigError`` naming what to fix. The runner then uses the
task itself, so probes, sweeps and reports treat it exactly like a built-in one. (The runner reads the
latent kind from the built task when ``_target_`` is a function rather than a ``Task`` class, and applies
``check_task`` to it, so a task YAML of your own may also name your factory function as its ``_target_``.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from bench.formats.errors import ConfigError
from bench.tasks.base import Task
from estimators.base import LATENT_KINDS

REFERENCE_KINDS = ("analytic", "exact", "none")
PROTOCOL_HELP = "See README.md, 'Bring your own task', and the protocol in bench/tasks/base.py."


def resolve(factory: str) -> Callable[..., Any]:
    """The callable that ``factory`` (``module:attribute`` or ``module.attribute``) names."""
    if ":" in factory:
        module_name, _, attribute = factory.partition(":")
    else:
        module_name, _, attribute = factory.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(
            f"task.factory={factory!r} is not of the form MODULE:FUNCTION (e.g. my_package.tasks:make_task) "
            f"nor a path to a YAML file with a _target_. {PROTOCOL_HELP}"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure to import the user's module is reported as such
        raise ConfigError(
            f"task.factory={factory!r}: could not import module {module_name!r} ({type(error).__name__}: "
            f"{error}). Run from the directory that contains it or put it on PYTHONPATH."
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"task.factory={factory!r}: module {module_name!r} has no attribute {attribute!r}."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(
            f"task.factory={factory!r} names a {type(target).__name__}, not a function or class that "
            f"returns a task."
        )
    return target


def build_from_yaml(path: Path, arguments: dict[str, Any]) -> Any:
    """Instantiate the user's own YAML (``_target_`` plus arguments); task config keys override its keys."""
    try:
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # noqa: BLE001 - a YAML syntax error is a configuration error
        raise ConfigError(f"task.factory={str(path)!r}: could not read the YAML file ({error}).") from None
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(
            f"task.factory={str(path)!r}: the YAML file must be a mapping with a _target_ key naming the "
            f"function or Task class to call. {PROTOCOL_HELP}"
        )
    node.pop("name", None)
    try:
        return instantiate({**node, **arguments})
    except InstantiationException as error:
        cause = error.__cause__ if error.__cause__ is not None else error
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"task.factory={str(path)!r}: {cause}") from None


def overrides(task: Task, method: str) -> bool:
    return getattr(type(task), method) is not getattr(Task, method)


def check_task(task: Any, where: str) -> Task:
    """Check that what a factory returned follows the task protocol; a ConfigError says what is wrong.

    ``where`` names the factory in the messages (``task.factory='my_module:make_task'``).
    """
    if not isinstance(task, Task):
        raise ConfigError(
            f"{where} returned a {type(task).__name__}, not a task: it must return an instance of a subclass "
            f"of bench.tasks.base.Task. {PROTOCOL_HELP}"
        )
    name = type(task).__name__
    if task.latent not in LATENT_KINDS:
        raise ConfigError(
            f"{where}: task {name} declares latent = {task.latent!r}; set the class attribute latent to one "
            f"of {', '.join(LATENT_KINDS)} (what its distribution() returns decides which estimators fit)."
        )
    if task.reference not in REFERENCE_KINDS:
        raise ConfigError(
            f"{where}: task {name} declares reference = {task.reference!r}; it must be one of "
            f"{', '.join(REFERENCE_KINDS)}."
        )
    missing = [
        method
        for method in ("probed_parameters", "evaluate")
        + (() if overrides(task, "loss") else ("distribution", "objective"))
        + (("reference_gradient",) if task.reference != "none" else ())
        if not overrides(task, method)
    ]
    if missing:
        raise ConfigError(
            f"{where}: task {name} does not implement {', '.join(f'{method}()' for method in missing)}, "
            f"which the protocol needs (reference = {task.reference!r}). {PROTOCOL_HELP}"
        )
    if not any(parameter.requires_grad for parameter in task.parameters()):
        raise ConfigError(
            f"{where}: task {name} has no trainable parameters; register them as nn.Parameter attributes "
            f"(or submodules) so that the optimizer can train them."
        )
    probed = task.probed_parameters()
    if not isinstance(probed, dict) or not probed:
        raise ConfigError(
            f"{where}: {name}.probed_parameters() must return a non-empty dict name -> parameter, got "
            f"{type(probed).__name__} {probed!r:.80}."
        )
    own = {id(parameter) for parameter in task.parameters()}
    for key, value in probed.items():
        if not isinstance(value, Tensor) or not value.requires_grad or id(value) not in own:
            raise ConfigError(
                f"{where}: {name}.probed_parameters()[{key!r}] must be one of the task's own trainable "
                f"parameters (an nn.Parameter registered on the task), got {type(value).__name__}."
            )
    return task


def from_factory(factory: str | None = None, **arguments: Any) -> Task:
    """The task that ``factory`` builds from ``arguments``, checked; the ``_target_`` of ``task=custom``."""
    if not factory:
        raise ConfigError(
            "task=custom needs task.factory: the function that builds your task, as MODULE:FUNCTION "
            "(e.g. task.factory=my_package.tasks:make_task) or a path to a YAML file with a _target_. "
            + PROTOCOL_HELP
        )
    factory = str(factory)
    if factory.endswith((".yaml", ".yml")):
        path = Path(factory)
        if not path.is_file():
            raise ConfigError(f"task.factory={factory!r}: no such YAML file (looked in {Path.cwd()}).")
        return check_task(build_from_yaml(path, arguments), f"task.factory={factory!r}")
    function = resolve(factory)
    try:
        built = function(**arguments)
    except TypeError as error:  # most often an argument name that the factory does not take
        raise ConfigError(f"task.factory={factory!r} could not be called with {arguments}: {error}") from None
    return check_task(built, f"task.factory={factory!r}")
