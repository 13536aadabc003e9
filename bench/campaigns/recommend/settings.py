"""The ``recommend.*`` settings of ``python -m bench.recommend``, read from the command line and checked.

They are not part of any run's config (the runs carry only the task's, estimator's and optimizer's
settings), so a recommendation's runs keep the digests of the same runs made by hand.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import OmegaConf

from bench.formats.errors import ConfigError

PREFIX = "recommend."


@dataclass
class Settings:
    """What ``recommend.<key>=<value>`` may set (the defaults are for 2 CPU cores)."""

    budget_minutes: float = 10.0  # the whole protocol's wall-time budget; done within 1.25x of it
    estimators: list[str] | None = None  # candidates (null: every estimator that fits the task)
    optimizers: list[str] = field(default_factory=lambda: ["adam"])  # more than one: the optimizer too
    samples: int = 2  # S of rloo that sets the equal-cost budget of evaluations of f per estimate
    grid: int = (
        3  # learning rates in stage 1, log-spaced from lr/10 to lr*10 (fewer when the budget is short)
    )
    seeds: int = 5  # fresh seeds of stage 2 (fewer only when the budget forces it, said as a caveat)
    leaders: int = 3  # candidates rerun in stage 2
    max_steps: int | None = None  # training steps of every run at most (null: the task's `steps`)
    min_steps: int = 30  # fewer steps than this and the budget is refused (exit 2)
    draws: int = 256  # M of the same-point evidence (fewer when the budget is short, at least 64)
    dir: str | None = None  # where the runs go (null: results/recommend/<task>-<digest of the overrides>)


KNOWN = [item.name for item in fields(Settings)]


def split_overrides(arguments: list[str]) -> tuple[list[str], list[str]]:
    """``(recommend settings, run overrides)`` from the command line (``+recommend.x`` counts as well)."""
    own = [item for item in arguments if item.lstrip("+").startswith(PREFIX)]
    return own, [item for item in arguments if item not in own]


def parse(items: list[str]) -> Settings:
    """The settings from ``recommend.key=value`` items; ConfigError naming an unknown key or a bad value."""
    settings = Settings()
    for item in items:
        key, _, text = item.lstrip("+").removeprefix(PREFIX).partition("=")
        if key not in KNOWN:
            close = difflib.get_close_matches(key, KNOWN, 1)
            hint = f" (did you mean recommend.{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown setting recommend.{key}{hint}; the settings are "
                + ", ".join(f"recommend.{name}" for name in KNOWN)
                + "."
            )
        try:
            value: Any = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]
        except Exception as error:  # noqa: BLE001 - OmegaConf's parse errors, as one paragraph
            raise ConfigError(f"cannot read {item!r}: {error}") from None
        setattr(settings, key, value)
    check(settings)
    return settings


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(name, str) and name for name in value)


def check(settings: Settings) -> None:
    budget = settings.budget_minutes
    rules = [
        (
            isinstance(budget, int | float) and not isinstance(budget, bool) and 0 < budget < math.inf,
            f"recommend.budget_minutes must be a number of minutes > 0, got {budget!r}",
        ),
        (
            settings.estimators is None or names(settings.estimators),
            "recommend.estimators must be a list of estimator names, e.g. recommend.estimators=[rloo,st]",
        ),
        (names(settings.optimizers), "recommend.optimizers must be a list of optimizer names, e.g. [adam]"),
        (whole(settings.samples) and settings.samples >= 1, "recommend.samples must be a whole number >= 1"),
        (
            whole(settings.grid) and 1 <= settings.grid <= 9,
            "recommend.grid must be a whole number from 1 to 9",
        ),
        (whole(settings.seeds) and settings.seeds >= 2, "recommend.seeds must be a whole number >= 2"),
        (whole(settings.leaders) and settings.leaders >= 1, "recommend.leaders must be a whole number >= 1"),
        (
            settings.max_steps is None or (whole(settings.max_steps) and settings.max_steps >= 1),
            "recommend.max_steps must be a whole number >= 1 (or null: the task's steps)",
        ),
        (
            whole(settings.min_steps) and settings.min_steps >= 1,
            "recommend.min_steps must be a whole number >= 1",
        ),
        (whole(settings.draws) and settings.draws >= 8, "recommend.draws must be a whole number >= 8"),
        (settings.dir is None or isinstance(settings.dir, str), "recommend.dir must be a folder (a path)"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message + ".")
