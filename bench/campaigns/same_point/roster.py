"""Which estimators a same-point gradient study probes, built how, and with how many samples.

The roster is derived, not listed: every estimator config in ``conf/estimator/`` whose class supports the
task's latent kind (``bench.run.build.estimators_for``), less ``study.exclude`` (``exact``: the reference, not
a competitor; ``none``: it samples nothing), less those that refuse the task's distribution when tried once
(``disarm`` where C ≠ 2). ``study.estimators`` may name a list instead.

Two sample counts per estimator (``docs/design.md``, "Where an estimator is measured"):

- ``fixed``: every estimator at S = ``study.samples`` (raised to the estimator's smallest valid S);
- ``equal_cost``: S chosen so that the evaluations of f per estimate (``Estimator.f_evaluations``,
  ``bench.run.costs``) match RLOO's at S = ``study.samples``; where an estimator needs more evaluations than
  that even at its smallest S (local expectation gradients, alias IndeCateR, the measure-valued derivative),
  RLOO and Gumbel-Softmax (``EQUAL_COST_PEERS``, where they fit) are added at the S that matches that
  estimator's evaluations instead, as IndeCateR's authors compare it (De Smet et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.formats.configs import CONF_DIR
from bench.formats.errors import ConfigError
from bench.run.build import build, estimators_for
from bench.tasks.base import Task
from estimators.base import Estimator, EstimatorError

VARIANTS = ("fixed", "equal_cost")
EQUAL_COST_REFERENCE = "rloo"  # the estimator whose f_evals at study.samples sets the equal-cost budget
EQUAL_COST_PEERS = ("gumbel",)  # also matched, with RLOO, to an estimator that costs more than the budget
LARGEST_SAMPLES = 4096  # the equal-cost search gives up above this many samples


@dataclass
class Member:
    """One probed (estimator, S): its config name, the built estimator, S, its evaluations of f per estimate,
    and the variants (``VARIANTS``) it belongs to."""

    name: str
    estimator: Estimator
    samples: int
    f_evals: int | None
    variants: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, int]:
        return self.name, self.samples


def estimator_node(name: str) -> DictConfig:
    """The config of ``conf/estimator/<name>.yaml``, presets merged over the configs they extend (``rloo``
    over ``score_function``)."""
    path = CONF_DIR / "estimator" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"study.estimators names {name!r}, which is not an estimator config; the estimators are "
            f"{', '.join(sorted(p.stem for p in path.parent.glob('*.yaml')))}."
        )
    node = OmegaConf.load(path)
    merged = OmegaConf.create({})
    for parent in node.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            merged = OmegaConf.merge(merged, estimator_node(parent))
    own = OmegaConf.masked_copy(node, [key for key in node if key != "defaults"])
    return OmegaConf.merge(merged, own)


def study_names(config: DictConfig, latent: str) -> list[str]:
    """The estimator config names the study probes: ``study.estimators`` (``auto`` or a list), less
    ``study.exclude``."""
    chosen = config.study.get("estimators", "auto")
    names = estimators_for(latent) if chosen in (None, "auto") else [str(name) for name in chosen]
    excluded = {str(name) for name in config.study.get("exclude", ["exact", "none"]) or []}
    return [name for name in names if name not in excluded]


def build_estimator(name: str, config: DictConfig) -> Estimator:
    """The estimator ``name`` as the study probes it: the run's own estimator config where ``name`` is the
    trajectory's (its command-line settings included), else the bundled config, with
    ``study.settings.<name>`` merged over it."""
    node = config.estimator if name == config.estimator.name else estimator_node(name)
    settings = OmegaConf.select(config, f"study.settings.{name}", default=None)
    if settings is not None:
        node = OmegaConf.merge(node, settings)
    return build(node)


def valid_samples(estimator: Estimator, samples: int) -> int | None:
    """The smallest S ≥ ``samples`` the estimator accepts (DisARM: even), or None."""
    for candidate in range(max(samples, estimator.min_samples), max(samples, estimator.min_samples) + 2):
        try:
            estimator.check_samples(candidate)
        except EstimatorError:
            continue
        return candidate
    return None


def refusal(estimator: Estimator, params: Any, objective: Any, samples: int) -> str | None:
    """Why the estimator cannot estimate at ``params`` (one trial estimate, its error), or None."""
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            estimator.eval()
            estimator(params, objective, samples)
    except EstimatorError as error:
        return str(error)
    finally:
        estimator.train()
    return None


def f_evaluations(estimator: Estimator, params: Any, objective: Any, samples: int) -> int:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        return int(estimator.f_evaluations(params, objective, samples))


def matching_samples(estimator: Estimator, params: Any, objective: Any, budget: int) -> int | None:
    """The S at which the estimator's f_evals equal ``budget``, or None where none does."""
    smallest = valid_samples(estimator, 1)
    if smallest is None:
        return None
    per_sample = f_evaluations(estimator, params, objective, smallest) / smallest
    guess = max(smallest, round(budget / per_sample))
    for candidate in (guess - 1, guess, guess + 1):
        if candidate < smallest or candidate > LARGEST_SAMPLES:
            continue
        if valid_samples(estimator, candidate) != candidate:
            continue
        if f_evaluations(estimator, params, objective, candidate) == budget:
            return candidate
    return None


def roster(
    config: DictConfig, task: Task, params: Any, objective: Any
) -> tuple[list[Member], dict[str, str]]:
    """The members of the study at the task's distribution ``params`` (probe batch) and f ``objective``, and
    the estimators left out with the reason for each."""
    samples = int(config.study.get("samples", 2))
    variants = [variant for variant in VARIANTS if variant == "fixed" or config.study.get(variant, True)]
    members: dict[tuple[str, int], Member] = {}
    left_out: dict[str, str] = {}
    built: dict[str, Estimator] = {}

    def add(name: str, count: int, variant: str) -> None:
        key = (name, count)
        if key not in members:  # an estimator of its own: its state (an EMA baseline) is not shared
            estimator = build_estimator(name, config)
            members[key] = Member(name, estimator, count, f_evaluations(estimator, params, objective, count))
        members[key].variants.add(variant)

    for name in study_names(config, task.latent):
        try:
            estimator = build_estimator(name, config)
        except ConfigError as error:
            left_out[name] = str(error)
            continue
        if task.latent not in estimator.latents:
            supported = ", ".join(estimator.latents)
            left_out[name] = f"it supports {supported}, the task's latents are {task.latent}"
            continue
        count = valid_samples(estimator, samples)
        reason = (
            refusal(estimator, params, objective, count)
            if count is not None
            else (f"no valid sample count ≥ {samples}")
        )
        if reason is not None:
            left_out[name] = reason
            continue
        built[name] = estimator
        add(name, count, "fixed")
    if "equal_cost" in variants and EQUAL_COST_REFERENCE in built:
        reference = built[EQUAL_COST_REFERENCE]
        budget = f_evaluations(reference, params, objective, valid_samples(reference, samples))
        for name, estimator in built.items():
            count = matching_samples(estimator, params, objective, budget)
            if count is not None:
                add(name, count, "equal_cost")
                continue
            # More evaluations than the budget even at its smallest S: RLOO is matched to it instead, in a
            # comparison of the two of their own.
            smallest = valid_samples(estimator, 1)
            evaluations = f_evaluations(estimator, params, objective, smallest)
            matched = matching_samples(reference, params, objective, evaluations)
            if smallest is not None and matched is not None:
                add(name, smallest, f"equal_cost_{name}")
                add(EQUAL_COST_REFERENCE, matched, f"equal_cost_{name}")
                for peer in (peer for peer in EQUAL_COST_PEERS if peer in built and peer != name):
                    count = matching_samples(built[peer], params, objective, evaluations)
                    if count is not None:
                        add(peer, count, f"equal_cost_{name}")
    return sorted(members.values(), key=lambda member: (member.name, member.samples)), left_out


def variant_members(members: Sequence[Member]) -> dict[str, list[Member]]:
    """Members by variant: ``fixed``, ``equal_cost`` and, where RLOO was matched to an estimator E that costs
    more than the budget even at its smallest S, ``equal_cost_E`` (E at its smallest S against RLOO at E's
    f_evals)."""
    grouped: dict[str, list[Member]] = {}
    for member in members:
        for variant in sorted(member.variants):
            grouped.setdefault(variant, []).append(member)
    return grouped
