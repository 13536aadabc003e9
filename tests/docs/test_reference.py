"""The reference is complete and agrees with the code: every configured estimator, task, optimizer and
experiment has its row; the metric table and the summary.json table are the results contract's fields
(``bench.formats.contract.FIELDS``), the latter generated from it; and every configured estimator is part of
the public API (``estimators.__all__``), with a docstring that says whether it is biased.

When a field is added to the contract, ``python -m tests.docs.test_reference`` prints the summary.json table
to paste into docs/reference.md.
"""

from __future__ import annotations

import fnmatch
import importlib
import re

import pytest
from omegaconf import OmegaConf

import estimators
from bench.formats import contract
from bench.formats.configs import config_target, options
from estimators.base import LATENT_KINDS, Estimator
from tests.docs.pages import tables
from tests.helpers import CONF, ROOT

REFERENCE = ROOT / "docs" / "reference.md"
GUIDE = ROOT / "docs" / "guide.md"
PRESENT = (
    ("always", contract.SUMMARY_FIELDS),
    ("some runs", contract.OPTIONAL_FIELDS),
    ("Monte-Carlo reference", contract.REFERENCE_SUMMARY_FIELDS),
    ("study runs", contract.STUDY_FIELDS),
)


def names(cell: str) -> list[str]:
    """The code-marked names of a table cell (`a`, `b`: ...)."""
    return re.findall(r"`([^`]+)`", cell)


def first_column(header: str, text: str) -> list[str]:
    """The names in the first column of the tables of ``text`` whose first column is headed ``header``."""
    return [
        name for rows in tables(text) if rows[0][0] == header for row in rows[2:] for name in names(row[0])
    ]


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def type_name(field: contract.Field) -> str:
    kinds = {bool: "boolean", int: "integer", str: "string", list: "list", dict: "object"}
    kind = "number" if float in field.types else kinds[field.types[0]]
    return kind + (" or null" if field.nullable else "")


def summary_table(metrics: list[str], groups=PRESENT) -> str:
    """The summary.json table: every field of the contract that the metric table does not define."""
    lines = ["| field | present | type | meaning |", "|---|---|---|---|"]
    for present, fields in groups:
        lines += [
            f"| `{field.name}` | {present} | {type_name(field)} | {field.meaning} |"
            for field in fields
            if field.name not in metrics
        ]
    return "\n".join(lines) + "\n"


def metric_names() -> list[str]:
    return first_column("metric", REFERENCE.read_text())


def test_the_metric_table_defines_every_probe_field_and_nothing_outside_the_contract():
    metrics = metric_names()
    assert len(metrics) == len(set(metrics)), "a metric with two rows"
    assert not set(metrics) - set(contract.FIELDS), "rows for fields that are not in the contract"
    expected = {*contract.PROBE_FIELDS, *contract.PROBE_COST_FIELDS, "step_time_ms", "optimizer_time_ms"}
    assert expected <= set(metrics), f"no row for {sorted(expected - set(metrics))}"


def test_the_summary_table_is_generated_from_the_contract():
    text = REFERENCE.read_text()
    expected = summary_table(metric_names())
    assert expected in text, "docs/reference.md's summary.json table is stale; paste:\n" + expected
    # Together the two tables hold every field of the contract, each once.
    fields = first_column("metric", text) + first_column("field", text)
    assert sorted(fields) == sorted(contract.FIELDS)


def test_the_generated_table_changes_with_the_contract():
    # Negative control: a field added to the contract makes the committed table stale.
    added = contract.Field("new_field", (int,), False, "a field added to the contract")
    groups = [
        (present, (*fields, added) if present == "some runs" else fields) for present, fields in PRESENT
    ]
    assert summary_table(metric_names(), groups) not in REFERENCE.read_text()


def test_every_configured_estimator_has_a_row():
    documented = first_column("name", section(REFERENCE.read_text(), "## Estimators"))
    assert sorted(options("estimator")) == sorted(documented)


def test_every_configured_task_has_a_row():
    text = REFERENCE.read_text()
    documented = first_column("name", section(text, "## Tasks")) + first_column("preset", text)
    missing = [name for name in options("task") if name not in documented]
    assert not missing, f"no row in docs/reference.md's task or standard-model table for {missing}"


def test_every_configured_optimizer_is_described():
    described = set(names(section(REFERENCE.read_text(), "## Optimizers")))
    missing = [name for name in options("optimizer") if name not in described]
    assert not missing, f"docs/reference.md's Optimizers does not name {missing}"


def test_every_experiment_has_a_row():
    patterns = first_column("experiment", GUIDE.read_text())
    missing = [name for name in options("experiment") if not any(fnmatch.fnmatch(name, p) for p in patterns)]
    assert not missing, f"no row in docs/guide.md's experiment table for {missing}"


@pytest.mark.parametrize("name", options("estimator"))
def test_every_configured_estimator_is_exported_and_documented(name):
    # The public API: what the harness can run, a user can import from `estimators`, with a docstring that
    # says whether it is biased and a declared latent kind.
    target = config_target(CONF / "estimator" / f"{name}.yaml")
    assert target is not None, f"conf/estimator/{name}.yaml names no class"
    module_name, _, class_name = target.rpartition(".")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    exported = {getattr(estimators, exported) for exported in estimators.__all__}
    assert cls in exported, f"{class_name} (conf/estimator/{name}.yaml) is not in estimators.__all__"
    assert issubclass(cls, Estimator) and cls.latents and set(cls.latents) <= set(LATENT_KINDS), cls
    documentation = f"{module.__doc__ or ''} {cls.__doc__ or ''}".lower()
    assert "biased" in documentation or "exact" in documentation, f"{module_name}: biased or not?"
    assert OmegaConf.load(CONF / "estimator" / f"{name}.yaml").get("name", name) == name


if __name__ == "__main__":
    print(summary_table(metric_names()), end="")
