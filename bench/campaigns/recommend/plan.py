"""Which candidates a recommendation compares, at what cost, and how many runs of what length fit its budget.

**Candidates.** Every estimator config whose class fits the task's latent kind (the same-point study's roster,
``bench.campaigns.same_point.roster``), or ``recommend.estimators``, less ``exact`` (the reference: never the
answer; "enumeration is affordable here" is said beside the answer when its evaluations of f per estimate
are at most ``AFFORDABLE`` times the budget) and ``none`` (it samples nothing, unless it is the only
estimator that fits). Each at **equal cost**: the S at which its evaluations of f per estimate equal RLOO's
at ``recommend.samples`` (``matching_samples``, as the study matches them); an estimator that needs more
even at its smallest S is left out, saying so. Each candidate is paired with each of
``recommend.optimizers``.

**Budget.** A pilot run of each candidate (``PILOT_STEPS`` steps) measures its time per step and per run; the
plan then chooses the training steps of every run (at most the task's ``steps``), the learning-rate grid's
size, the stage-2 seeds and the evidence's draws so that stage 1 (every candidate at every grid point,
one seed), stage 2 (the leaders at their chosen rate, fresh seeds) and the same-point evidence fit the
budget. A budget that cannot fit ``recommend.min_steps`` steps is refused, naming the smallest that fits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.campaigns.recommend.settings import Settings
from bench.campaigns.same_point.roster import f_evaluations, matching_samples, refusal, valid_samples
from bench.formats.errors import ConfigError
from bench.run.build import build, estimators_for
from bench.tasks.base import Task

REFERENCE = "rloo"  # the estimator whose evaluations of f at recommend.samples set the equal-cost budget
NOT_CANDIDATES = ("exact", "none")
AFFORDABLE = 10  # exact enumeration is "affordable" at most this many times the budget's evaluations of f
PILOT_STEPS = 10
PILOT_DRAWS = 16
STAGE_TWO_PROBES = 8  # probes along each stage-2 run: the curve whose end the "still falling" test reads
CHECKPOINTS = 4  # the same-point evidence's checkpoints: 0, a third, two thirds and the end of training
SHARES = {"stage_one": 0.45, "stage_two": 0.35, "evidence": 0.15}  # of the budget left after the pilot
SLACK = 0.9  # plan for this fraction of what is left: timings vary
SCREEN_SECONDS = 0.06  # a stage-1 run in memory besides its steps: building the objects, one evaluation


class RecommendFailed(RuntimeError):
    """Every run of a stage failed: no recommendation; the message lists the failures."""


@dataclass
class Candidate:
    """One estimator at its equal-cost S, with one optimizer."""

    estimator: str
    samples: int
    f_evals: int
    optimizer: str
    unbiased: bool
    lr: float = 0.0  # the optimizer's configured learning rate: the grid's centre
    step_seconds: float = 0.0  # measured by the pilot
    run_seconds: float = 0.0  # a run's cost besides its steps (building, probes, files)
    draw_seconds: float = 0.0  # one gradient estimate of a probe

    @property
    def key(self) -> str:
        return f"{self.estimator}@{self.samples}" + (f"+{self.optimizer}" if self.optimizer != "adam" else "")

    def label(self, optimizers: int) -> str:
        return f"{self.estimator} (S = {self.samples})" + (
            f" with {self.optimizer}" if optimizers > 1 else ""
        )


@dataclass
class Plan:
    """What the protocol runs (written to ``plan.json``, so that a re-run continues the same plan)."""

    task: str
    overrides: list[str]
    candidates: list[Candidate]
    left_out: dict[str, str]
    budget_f_evals: int | None
    reference: str  # the task's reference gradient: analytic, exact, monte_carlo or none
    enumeration: str | None  # "enumeration is affordable here ..." or None
    steps: int = 0
    grid: list[float] = field(default_factory=list)  # multipliers of each candidate's lr
    stage_one_seeds: list[int] = field(default_factory=lambda: [0])
    stage_two_seeds: list[int] = field(default_factory=list)
    leaders: int = 3
    draws: int = 256
    probe_every: int = 0
    notes: list[str] = field(default_factory=list)  # what the budget cut, said as caveats

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        data = dict(data)
        data["candidates"] = [Candidate(**item) for item in data["candidates"]]
        return cls(**data)

    def learning_rates(self, candidate: Candidate) -> list[float]:
        return [float(f"{candidate.lr * factor:.6g}") for factor in self.grid]


def grid_factors(points: int) -> list[float]:
    """``points`` multipliers log-spaced from 1/10 to 10 (1 alone for one point)."""
    if points == 1:
        return [1.0]
    return [10 ** (-1 + 2 * index / (points - 1)) for index in range(points)]


def estimator_node(name: str) -> DictConfig:
    from bench.campaigns.same_point.roster import estimator_node as node

    return node(name)


def candidates(
    config: DictConfig, task: Task, settings: Settings
) -> tuple[list[Candidate], dict[str, str], int | None, str | None]:
    """The candidates, the estimators left out (with why), the equal-cost budget of evaluations of f and the
    note on exact enumeration (module docstring)."""
    batch = task.probe_batch()
    with torch.no_grad():
        params = task.distribution(batch)
    objective = task.objective(batch)
    fitting = estimators_for(task.latent)
    names = list(settings.estimators) if settings.estimators is not None else fitting
    left_out: dict[str, str] = {}
    unknown = [name for name in names if name not in fitting]
    for name in unknown:
        left_out[name] = (
            f"it does not fit task {config.task.name} (estimators that fit: {', '.join(fitting)})"
        )
    names = [name for name in names if name in fitting]
    sampling = [name for name in names if name not in NOT_CANDIDATES]
    if not sampling:  # e.g. the embedding task: nothing is sampled, `none` is the only estimator
        sampling = [name for name in names if name == "none"]
    built = {}
    for name in sampling:
        try:
            estimator = build(estimator_node(name))
        except ConfigError as error:
            left_out[name] = str(error)
            continue
        smallest = valid_samples(estimator, 1)
        try:
            reason = (
                "no valid sample count"
                if smallest is None
                else refusal(estimator, params, objective, smallest)
            )
        except Exception as error:  # noqa: BLE001 - an estimator the task's f breaks is left out, saying why
            reason = f"one trial estimate failed: {type(error).__name__}: {error}"
        if reason is not None:
            left_out[name] = reason
            continue
        built[name] = estimator
    budget = None
    if REFERENCE in built:
        reference = built[REFERENCE]
        budget = f_evaluations(reference, params, objective, valid_samples(reference, settings.samples))
    chosen: list[tuple[str, int, int, bool]] = []
    for name, estimator in built.items():
        if budget is None or name == "none":  # no RLOO to match: every candidate at recommend.samples
            count = valid_samples(estimator, settings.samples) or estimator.min_samples
        else:
            count = matching_samples(estimator, params, objective, budget)
            if count is None:
                smallest = valid_samples(estimator, 1)
                cost = f_evaluations(estimator, params, objective, smallest)
                left_out[name] = (
                    f"at its smallest S = {smallest} it evaluates f {cost} times per estimate, more than the "
                    f"equal-cost budget of {budget} (RLOO at S = {settings.samples})"
                )
                continue
        evaluations = f_evaluations(estimator, params, objective, count)
        chosen.append((name, count, evaluations, bool(getattr(estimator, "unbiased", False))))
    enumeration = None
    if "exact" in fitting:
        try:
            exact = build(estimator_node("exact"))
            cost = f_evaluations(exact, params, objective, 1)
            if budget is not None and cost <= AFFORDABLE * budget:
                enumeration = (
                    f"enumeration is affordable here: the exact gradient evaluates f {cost} times per "
                    f"estimate, {cost / budget:.3g}x the candidates' budget (train with estimator=exact)"
                )
        except (ConfigError, RuntimeError, ValueError):
            pass
    result = []
    for optimizer in settings.optimizers:
        for name, count, evaluations, unbiased in chosen:
            result.append(Candidate(name, count, evaluations, optimizer, unbiased))
    return result, left_out, budget, enumeration


def choose_sizes(plan: Plan, settings: Settings, seconds: float, task_steps: int) -> None:
    """Fit the steps, the grid, the stage-2 seeds and the evidence's draws into ``seconds`` (module
    docstring); ConfigError naming the smallest budget that fits when even ``recommend.min_steps`` do not."""
    seconds *= SLACK
    training = seconds * (SHARES["stage_one"] + SHARES["stage_two"])
    ceiling = min(task_steps, settings.max_steps or task_steps)
    leaders = min(settings.leaders, len(plan.candidates))
    expensive = sorted(plan.candidates, key=lambda item: item.step_seconds, reverse=True)[:leaders]

    def cost(steps: int, points: int, seeds: int, top: int) -> float:
        probes = STAGE_TWO_PROBES * PILOT_DRAWS
        one = sum(points * (SCREEN_SECONDS + steps * item.step_seconds) for item in plan.candidates)
        two = sum(
            seeds * (item.run_seconds + steps * item.step_seconds + probes * item.draw_seconds)
            for item in expensive[:top]
        )
        return one + two

    def largest_steps(points: int, seeds: int, top: int) -> int:
        fixed = cost(0, points, seeds, top)
        per_step = cost(1, points, seeds, top) - fixed
        if per_step <= 0:
            return ceiling
        return min(ceiling, int((training - fixed) / per_step))

    options = [(settings.grid, settings.seeds, leaders)]
    for points in range(settings.grid - 1, 1, -1):
        options.append((points, settings.seeds, leaders))
    options += [(2, min(settings.seeds, 3), leaders), (2, min(settings.seeds, 3), min(leaders, 2))]
    options.append((1, min(settings.seeds, 3), min(leaders, 2)))
    options.append((1, 2, min(leaders, 2)))
    for points, seeds, top in options:
        steps = largest_steps(points, seeds, top)
        if steps >= settings.min_steps:
            break
    else:
        # The smallest protocol does not fit. It still runs when one screening run of recommend.min_steps
        # steps per candidate fits in what is left (the rest overruns the budget, said as a caveat); below
        # that the budget is refused.
        one_each = sum(SCREEN_SECONDS + settings.min_steps * item.step_seconds for item in plan.candidates)
        if one_each > seconds:
            points, seeds, top = options[-1]
            needed = cost(settings.min_steps, points, seeds, top) / (
                SLACK * (SHARES["stage_one"] + SHARES["stage_two"])
            )
            keys = ", ".join(item.key for item in plan.candidates)
            raise ConfigError(
                f"recommend.budget_minutes is too small for one run of {settings.min_steps} steps per "
                f"candidate ({len(plan.candidates)} candidates: {keys}): the smallest budget that fits is "
                f"about {needed / 60 + 0.05:.1f} minutes beyond what the pilot took; give a larger "
                "recommend.budget_minutes, fewer recommend.estimators, or a smaller recommend.min_steps."
            )
        points, seeds, top = options[-1]
        steps = settings.min_steps
        plan.notes.append(
            "the budget was too short for the smallest protocol (one learning rate, 2 seeds, "
            f"{settings.min_steps} steps): it ran anyway and took longer than the budget"
        )
    plan.steps, plan.grid, plan.leaders = steps, grid_factors(points), top
    plan.stage_two_seeds = list(range(100, 100 + seeds))
    plan.probe_every = max(1, steps // STAGE_TWO_PROBES)
    if points < settings.grid:
        plan.notes.append(f"the budget allowed {points} learning rate(s) per candidate, not {settings.grid}")
    if seeds < 5:
        plan.notes.append(f"fewer than 5 seeds in stage 2 ({seeds}): the budget did not allow more")
    if steps < ceiling:
        plan.notes.append(f"{steps} training steps per run, fewer than the task's {ceiling}: the budget's")
    evidence = seconds * SHARES["evidence"]
    per_draw = sum(item.draw_seconds for item in plan.candidates) * CHECKPOINTS
    plan.draws = int(max(64, min(settings.draws, evidence / per_draw if per_draw > 0 else settings.draws)))
    if plan.draws < settings.draws:
        plan.notes.append(f"M = {plan.draws} draws per estimator at each evidence checkpoint (budget)")


def resolved_steps(config: DictConfig) -> int:
    return int(OmegaConf.select(config, "steps"))


def describe_budget(plan: Plan) -> str:
    runs_one = len(plan.candidates) * len(plan.grid) * len(plan.stage_one_seeds)
    runs_two = plan.leaders * len(plan.stage_two_seeds)
    return (
        f"{len(plan.candidates)} candidates at equal cost, {plan.steps} steps per run; stage 1: {runs_one} "
        f"runs ({len(plan.grid)} learning rates each); stage 2: {runs_two} runs (the {plan.leaders} leaders "
        f"on {len(plan.stage_two_seeds)} fresh seeds); evidence: {CHECKPOINTS} checkpoints x {plan.draws} "
        "draws"
    )


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
