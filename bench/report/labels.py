"""Labels: each run of a task named by the settings that vary between the runs of that task.

The settings are read from each run's resolved config (``.hydra/config.yaml``; interpolations that Hydra left
unresolved stay literal text, the same in every run), flattened to dotted keys. Keys that do not change the
configuration (``bench.formats.contract.NOT_PART_OF_THE_CONFIGURATION``), the ``task.report`` declaration,
the group names and ``samples`` are left out: names and S come from ``summary.json``, which holds the
resolved values (``lookahead_adam``, not ``lookahead_${.inner.name}``; S = 2, not null).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench.formats.contract import NOT_PART_OF_THE_CONFIGURATION

GROUPS = ("task", "estimator", "optimizer")
"""Config groups: a key under ``<group>.`` varies only if it differs between runs of the same group name
(``estimator.tau`` differs between gumbel and rloo only because they are different estimators)."""

NOT_SETTINGS = (
    *NOT_PART_OF_THE_CONFIGURATION,
    "samples",
    "task.report",
    *(f"{group}.name" for group in GROUPS),
)
"""Dotted keys (and the keys below them) that are never part of a label's settings."""

ABSENT = "\0absent"


def render(value: Any) -> str:
    """A config value as it reads in a label: YAML spelling for booleans and null, JSON for lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted key → rendered value for every leaf of a nested mapping (an empty mapping is a leaf)."""
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = render(value)
    return flat


def settings(config: dict[str, Any] | None) -> dict[str, str] | None:
    """The settings of a resolved config that can tell configurations apart; None without a config."""
    if config is None:
        return None
    return {
        key: value
        for key, value in flatten(config).items()
        if not any(key == dropped or key.startswith(f"{dropped}.") for dropped in NOT_SETTINGS)
    }


def short(key: str) -> str:
    """``task.codebook_update`` reads as ``codebook_update``: the group prefix adds only width."""
    group, _, rest = key.partition(".")
    return rest if group in GROUPS and rest else key


def varying_keys(group: pd.DataFrame, configured: dict[Any, dict[str, str]]) -> list[str]:
    """Keys whose value differs between runs of ``group`` (one task), within a group name for group keys."""
    keys = sorted({key for values in configured.values() for key in values})
    varying = []
    for key in keys:
        scope = key.partition(".")[0]
        partition = group[scope] if scope in GROUPS and scope in group else pd.Series("", index=group.index)
        for _, members in group.loc[list(configured)].groupby(partition.loc[list(configured)]):
            if len({configured[index].get(key, ABSENT) for index in members.index}) > 1:
                varying.append(key)
                break
    return varying


def samples_text(value: Any) -> str:
    # A run refused before it resolved its sample count (skipped) has none.
    return f"S={int(value)}" if pd.notna(value) else "S=?"


def task_labels(group: pd.DataFrame, configs: dict[Any, dict[str, str] | None]) -> pd.Series:
    """Labels of the runs of one task (rows of ``group``, indexed like ``configs``)."""
    configured = {index: values for index, values in configs.items() if values is not None}
    keys = varying_keys(group, configured)
    estimators, optimizers = group["estimator"].astype(str), group["optimizer"].astype(str)
    samples = group["samples"] if "samples" in group else pd.Series(float("nan"), index=group.index)
    optimizer_varies = optimizers.nunique() > 1
    samples_vary = samples.nunique() > 1
    name_estimator = estimators.nunique() > 1 or not (optimizer_varies or samples_vary or keys)
    labels = {}
    for index in group.index:
        parts = [estimators[index]] if name_estimator else []
        if optimizer_varies:
            parts.append(optimizers[index])
        if samples_vary:
            parts.append(samples_text(samples[index]))
        values = configured.get(index, {})
        parts += [f"{short(key)}={values[key]}" for key in keys if key in values]
        labels[index] = " ".join(parts) or estimators[index]
    named = pd.Series(labels, dtype=object)
    if "variant_digest" in group:
        # Configurations that read alike (runs without a resolved config, a setting the label leaves out)
        # must not be pooled as seeds of one: a short fingerprint of each configuration tells them apart.
        digests = group["variant_digest"].fillna("").astype(str)
        shared = digests.groupby(named).transform("nunique") > 1
        named = named.where(~shared, named + " [" + digests.str[:6] + "]")
    return named


def labels(summaries: pd.DataFrame, configs: dict[Any, dict[str, str] | None]) -> pd.Series:
    """A label per run (row of ``summaries``): what varies between the runs of its task.

    Parts, in order: the estimator's name (unless every run of the task has the same estimator and
    something else varies: an optimizer study reads "adam", not "none adam"), the optimizer's name where it
    varies, S where it varies, then ``key=value`` for every other setting that varies (``settings``;
    group keys within runs of one group name). Runs with the same label but a different ``variant_digest``
    get a short fingerprint appended, so that different configurations are never pooled as seeds.
    ``configs`` maps each row to its ``settings`` (None for a run without ``.hydra/config.yaml``, whose
    label comes from its summary alone).
    """
    result = pd.Series(index=summaries.index, dtype=object)
    for _, group in summaries.groupby("task", sort=False):
        result[group.index] = task_labels(group, {index: configs.get(index) for index in group.index})
    return result
