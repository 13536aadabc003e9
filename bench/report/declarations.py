"""A task's own report sections, declared in its config (``task.report``), never written into the report.

A task config may hold a ``report`` node (``conf/task/<task>.yaml``, a config of your own, or
``+task.report=...`` on the command line). The runner does not pass it to the task; Hydra saves it with the
resolved config in each run's ``.hydra/config.yaml``, where the report reads it. Its schema::

    report:
      best_known: 0.0                # the best known value of the objective (optional): sets the default
                                     # time-to-target level (a fraction of the gap from step 0 to it)
      sections:                      # each: a table, a figure, or both, in this order in report.md
        - name: codebook             # the figure's file: <task>_codebook.png (letters, digits, _ and -)
          text: ...                  # a paragraph above the table (optional)
          columns:                   # the table: one row per configuration, 95% interval over seeds
            - metric: perplexity     # a metric of metrics.csv, or a summary field
              title: perplexity      # the column's header (default: the metric)
              value: last            # last | training | step_zero | summary (see VALUES)
              log: false             # interval on the log scale: geometric mean ×/÷ factor (scale
                                     # quantities such as grad_variance are on it whatever this says)
          sort: objective            # rows sorted by this metric's column, lowest first (default: label)
          title: codebook usage      # the figure's title (default: the single panel's title)
          panels:                    # the figure: one panel per metric over training steps
            - metric: perplexity
              title: codebook perplexity (held-out)
              log: false             # logarithmic y axis and a log-scale band (non-positive values left
                                     # out); scale quantities get a log-scale band whatever this says
              skip_step_zero: false  # leave out step 0 (a first drop that would squash the rest)
              horizontal_line: null  # a dashed reference level, e.g. 1.0
          note: ...                  # a paragraph below the figure (optional)

Adding a task with metrics of its own touches nothing in ``bench/report/``: only its config.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

VALUES = {
    "last": "the run's last recorded value of the metric",
    "training": "the mean of the run's values after step 0 (over its probes, for a probed metric; the "
    "geometric mean for a log-scale column)",
    "step_zero": "the value at step 0, where every configuration of a seed starts from the same parameters",
    "summary": "the field of the run's summary.json",
}
"""Which value of a run a table column shows; the table gives their 95% interval over seeds."""

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
BUNDLED_TASKS = Path(__file__).resolve().parents[2] / "conf" / "task"


class DeclarationError(ValueError):
    """A ``task.report`` node that does not follow the schema; the message says where and what."""


@dataclass(frozen=True)
class Panel:
    """One panel of a figure: ``metric`` over training steps, the 95% interval over seeds per configuration
    (``bench.report.statistics``)."""

    metric: str
    title: str
    log: bool = False
    skip_step_zero: bool = False
    horizontal_line: float | None = None
    low: float | None = None  # the metric's bounds (a fraction: 0 and 1): bands are clipped to them
    high: float | None = None


@dataclass(frozen=True)
class Column:
    """One column of a section's table: ``value`` (see VALUES) of ``metric``, its 95% interval over seeds
    (on the log scale when ``log``)."""

    metric: str
    title: str
    value: str = "last"
    log: bool = False


@dataclass(frozen=True)
class Section:
    """A part of a task's report: a paragraph, a table, a figure and a note, each optional."""

    name: str
    text: str = ""
    columns: tuple[Column, ...] = ()
    sort: str | None = None
    title: str = ""
    panels: tuple[Panel, ...] = ()
    note: str = ""


def keys_of(node: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise DeclarationError(f"{where} must be a mapping with keys {', '.join(allowed)}, not {node!r:.60}")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise DeclarationError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    missing = [key for key in required if node.get(key) in (None, "")]
    if missing:
        raise DeclarationError(f"{where}: missing {', '.join(missing)}")
    return node


def text_of(node: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = node.get(key, default)
    if value is None:
        return default
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DeclarationError(f"{where}.{key} must be text, not {value!r:.60}")
    return str(value)


def flag_of(node: dict[str, Any], key: str, where: str) -> bool:
    value = node.get(key, False)
    if not isinstance(value, bool):
        raise DeclarationError(f"{where}.{key} must be true or false, not {value!r:.60}")
    return value


def list_of(node: dict[str, Any], key: str, where: str) -> list[Any]:
    value = node.get(key) or []
    if not isinstance(value, list):
        raise DeclarationError(f"{where}.{key} must be a list, not {value!r:.60}")
    return value


def parse_panel(node: Any, where: str) -> Panel:
    keys = ("metric", "title", "log", "skip_step_zero", "horizontal_line", "low", "high")
    node = keys_of(node, where, keys, ("metric",))
    for key in ("horizontal_line", "low", "high"):
        value = node.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DeclarationError(f"{where}.{key} must be a number, not {value!r:.60}")
    line = node.get("horizontal_line")
    metric = text_of(node, "metric", where)
    return Panel(
        metric=metric,
        title=text_of(node, "title", where, metric),
        log=flag_of(node, "log", where),
        skip_step_zero=flag_of(node, "skip_step_zero", where),
        horizontal_line=None if line is None else float(line),
        low=None if node.get("low") is None else float(node["low"]),
        high=None if node.get("high") is None else float(node["high"]),
    )


def parse_column(node: Any, where: str) -> Column:
    node = keys_of(node, where, ("metric", "title", "value", "log"), ("metric",))
    metric = text_of(node, "metric", where)
    value = text_of(node, "value", where, "last")
    if value not in VALUES:
        raise DeclarationError(f"{where}.value is {value!r}; it must be one of {', '.join(VALUES)}")
    return Column(
        metric=metric,
        title=text_of(node, "title", where, metric),
        value=value,
        log=flag_of(node, "log", where),
    )


def parse_section(node: Any, where: str) -> Section:
    allowed = ("name", "text", "columns", "sort", "title", "panels", "note")
    node = keys_of(node, where, allowed, ("name",))
    name = text_of(node, "name", where)
    if not NAME.match(name):
        raise DeclarationError(f"{where}.name {name!r} must be letters, digits, _ or - (it names a file)")
    columns = tuple(
        parse_column(item, f"{where}.columns[{index}]")
        for index, item in enumerate(list_of(node, "columns", where))
    )
    panels = tuple(
        parse_panel(item, f"{where}.panels[{index}]")
        for index, item in enumerate(list_of(node, "panels", where))
    )
    sort = node.get("sort")
    if sort is not None and sort not in {column.metric for column in columns}:
        raise DeclarationError(f"{where}.sort {sort!r} is not the metric of one of its columns")
    if not columns and not panels:
        raise DeclarationError(f"{where} has neither columns nor panels")
    return Section(
        name=name,
        text=text_of(node, "text", where).strip(),
        columns=columns,
        sort=sort,
        title=text_of(node, "title", where).strip(),
        panels=panels,
        note=text_of(node, "note", where).strip(),
    )


@dataclass(frozen=True)
class Declaration:
    """What a task's ``report`` node declares: its sections and the best known value of its objective."""

    sections: tuple[Section, ...] = ()
    best_known: float | None = None


def parse_report(node: Any, where: str = "task.report") -> Declaration:
    """The ``Declaration`` of a ``task.report`` node; DeclarationError when it does not follow the schema."""
    if node is None:
        return Declaration()
    node = keys_of(node, where, ("sections", "best_known"), ())
    best_known = node.get("best_known")
    if best_known is not None and (isinstance(best_known, bool) or not isinstance(best_known, (int, float))):
        raise DeclarationError(f"{where}.best_known must be a number, not {best_known!r:.60}")
    sections = [
        parse_section(item, f"{where}.sections[{index}]")
        for index, item in enumerate(list_of(node, "sections", where))
    ]
    names = [section.name for section in sections]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DeclarationError(f"{where}: section name(s) {', '.join(repeated)} used twice")
    return Declaration(tuple(sections), None if best_known is None else float(best_known))


def parse_declaration(node: Any, where: str = "task.report") -> list[Section]:
    """The sections a ``task.report`` node declares; DeclarationError when it does not follow the schema."""
    return list(parse_report(node, where).sections)


def encode(node: Any) -> str:
    """A declaration as the JSON text of the ``task_report`` column of summary.csv ("" for none)."""
    return "" if node is None else json.dumps(node, sort_keys=True, ensure_ascii=False)


def task_declaration(encoded: Iterable[Any], task: str) -> Declaration:
    """The declaration of ``task``, from its runs' declarations (JSON text; empty or NaN for none).

    Runs of one task normally share one declaration; if they do not, the most common one is used, with a
    warning. A declaration that does not follow the schema is left out with a warning naming the problem.
    """
    texts = Counter(text for text in encoded if isinstance(text, str) and text)
    if not texts:
        return Declaration()
    chosen, _ = texts.most_common(1)[0]
    if len(texts) > 1:
        warnings.warn(
            f"task {task}: its runs declare {len(texts)} different report sections (task.report); "
            "the most common declaration is used",
            stacklevel=2,
        )
    try:
        return parse_report(json.loads(chosen), f"task {task}: task.report")
    except (DeclarationError, ValueError) as error:
        warnings.warn(f"{error}; the task's own report sections are left out", stacklevel=2)
        return Declaration()


def task_sections(encoded: Iterable[Any], task: str) -> list[Section]:
    """The sections of ``task``'s declaration (``task_declaration``)."""
    return list(task_declaration(encoded, task).sections)


def bundled_declarations() -> dict[str, Any]:
    """Task name → ``report`` node of the task configs bundled in ``conf/task/``.

    Used for a run whose resolved config has no ``task.report`` key (a run made by calling the runner
    directly, without ``.hydra/``, or made before its task declared one): the declaration of the bundled
    task config of the same ``name``, if there is one.
    """
    found = {}
    for path in sorted(BUNDLED_TASKS.glob("*.yaml")):
        try:
            node = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(node, dict) and isinstance(node.get("name"), str) and node.get("report") is not None:
            found[node["name"]] = node["report"]
    return found
