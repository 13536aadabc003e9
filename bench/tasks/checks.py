"""Declarative checks of a task's constructor arguments, with one message format.

A task lists its arguments with a ``Rule`` each and calls ``check_arguments``; a value that breaks its rule
is a ``ConfigError`` that reads ``task.<key> must be <rule>, got task.<key>=<value>.``, optionally followed
by a hint, so that every task refuses bad settings the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.formats.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a value must be (``description``, completing "must be ...") and the test it must pass."""

    description: str
    test: Callable[[Any], bool]
    hint: str = ""

    def explained(self, hint: str) -> Rule:
        """The same rule with a hint appended to its message (what the setting means, how to fix it)."""
        return Rule(self.description, self.test, hint)


def is_whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value == int(value)


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def whole(least: int | None = None, most: int | None = None) -> Rule:
    """An integer in [least, most] (either bound optional)."""
    bounds = []
    if least is not None:
        bounds.append(f">= {least}")
    if most is not None:
        bounds.append(f"<= {most}")
    description = "an integer" + (" " + " and ".join(bounds) if bounds else "")
    return Rule(
        description,
        lambda value: (
            is_whole(value) and (least is None or value >= least) and (most is None or value <= most)
        ),
    )


def number(
    above: float | None = None,
    least: float | None = None,
    below: float | None = None,
    most: float | None = None,
) -> Rule:
    """A finite number with optional open (``above``, ``below``) and closed (``least``, ``most``) bounds."""
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if least is not None:
        parts.append(f">= {least:g}")
    if below is not None:
        parts.append(f"< {below:g}")
    if most is not None:
        parts.append(f"<= {most:g}")
    description = "a number" + (" " + " and ".join(parts) if parts else "")

    def test(value: Any) -> bool:
        return (
            is_number(value)
            and (above is None or value > above)
            and (least is None or value >= least)
            and (below is None or value < below)
            and (most is None or value <= most)
        )

    return Rule(description, test)


def one_of(options: Iterable[Any]) -> Rule:
    choices = tuple(options)
    return Rule("one of " + ", ".join(map(str, choices)), lambda value: value in choices)


def flag() -> Rule:
    return Rule("true or false", lambda value: isinstance(value, bool))


def optional(rule: Rule) -> Rule:
    return Rule(f"{rule.description} or null", lambda value: value is None or rule.test(value), rule.hint)


def check_arguments(values: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Raise a ConfigError for the first value in ``values`` that breaks its rule in ``rules``."""
    for key, rule in rules.items():
        value = values[key]
        if not rule.test(value):
            message = f"task.{key} must be {rule.description}, got task.{key}={value!r}."
            raise ConfigError(message + (f" {rule.hint}" if rule.hint else ""))


def refuse(key: str, value: Any, requirement: str, hint: str = "") -> None:
    """A ConfigError in the same format, for a requirement that involves other settings or the data."""
    message = f"task.{key} must be {requirement}, got task.{key}={value!r}."
    raise ConfigError(message + (f" {hint}" if hint else ""))
