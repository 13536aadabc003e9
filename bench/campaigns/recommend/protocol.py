"""The recommendation protocol, run end to end: pilot, stage 1, stage 2, same-point evidence, the answer.

Every run goes through ``bench.campaigns.same_point.run`` in this process, into its own folder under the
recommendation's folder, with its resolved config in ``.hydra/`` (so ``python -m bench.report`` reads it
like a sweep). A run folder that already holds an ``ok`` run of the same config is not run again, and the
plan is read back from ``plan.json``: re-running the same command continues where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench.campaigns import same_point
from bench.campaigns.recommend import plan as planning
from bench.campaigns.recommend.decide import decide
from bench.campaigns.recommend.evidence import read_evidence
from bench.campaigns.recommend.plan import (
    CHECKPOINTS,
    PILOT_DRAWS,
    PILOT_STEPS,
    Candidate,
    Plan,
    RecommendFailed,
    estimator_node,
)
from bench.campaigns.recommend.settings import Settings
from bench.campaigns.tuning.choice import final_value
from bench.formats.configs import compose
from bench.formats.contract import METRICS_FILE, OK
from bench.formats.errors import ConfigError
from bench.formats.files import atomic_write_text
from bench.formats.names import safe_name
from bench.run.build import build, learning_rates
from bench.run.sweep import finished_summary
from bench.tasks.custom import check_task
from estimators.base import EstimatorError

PLAN_FILE = "plan.json"
MIN_EVIDENCE_DRAWS = 32
LEDGER_FILE = "stage1.json"  # the stage-1 screening runs' results, by run


@dataclass
class Outcome:
    """One run's result: its status, its score (the final validation objective, else the objective; +inf
    when it did not finish well), the metric read, its folder and its error."""

    status: str
    score: float
    metric: str | None
    folder: Path
    error: str | None = None
    wall_seconds: float = 0.0


def root_folder(settings: Settings, task: str, overrides: list[str]) -> Path:
    if settings.dir:
        return Path(settings.dir)
    digest = hashlib.sha256(json.dumps(sorted(overrides)).encode()).hexdigest()[:8]
    return Path("results") / "recommend" / f"{safe_name(task, 40)}-{digest}"


class Runner:
    """Runs configs of the recommendation in this process, skipping finished ones, advancing the progress bar
    by each run's planned seconds."""

    def __init__(self, base: list[str], root: Path, progress: tqdm) -> None:
        self.base, self.root, self.progress = base, root, progress
        self.composed: dict[str, DictConfig] = {}  # optimizer → the config of the command line with it
        self.failures: list[str] = []
        try:
            self.ledger: dict[str, dict[str, Any]] = json.loads((root / LEDGER_FILE).read_text())
        except (OSError, ValueError):
            self.ledger = {}

    def config(self, candidate: Candidate, **settings: Any) -> DictConfig:
        """The run config of ``candidate``: the command line's, with the candidate's estimator config (as
        ``estimator=NAME`` gives it) and optimizer, S, and ``settings`` (``lr`` sets every learning rate of
        the optimizer)."""
        if candidate.optimizer not in self.composed:
            self.composed[candidate.optimizer] = compose(
                ["progress=false", *self.base, f"optimizer={candidate.optimizer}"]
            )
        config = copy.deepcopy(self.composed[candidate.optimizer])
        if config.get("threads") is None:
            # One thread per run unless threads=N says otherwise: the protocol's runs are many and small, and
            # a second thread on tiny tensors only waits (on a loaded machine a toy step took 60 ms with
            # two threads and 0.2 ms with one).
            config.threads = 1
        config.estimator = estimator_node(candidate.estimator)
        config.samples = candidate.samples
        lr = settings.pop("lr", None)
        if lr is not None:
            for path, _ in learning_rates(config.optimizer, "optimizer"):
                OmegaConf.update(config, path, float(lr), merge=False)
        for path, value in settings.items():
            OmegaConf.update(config, path, value, merge=True, force_add=True)
        return config

    def training(
        self, plan: Plan, candidate: Candidate, lr: float, seed: int, probe_every: int = 0
    ) -> DictConfig:
        """The config of one training run of the plan: ``plan.steps`` at ``lr`` and ``seed``, probed every
        ``probe_every`` steps (0: at the end only) with ``PILOT_DRAWS`` draws."""
        probes = {"probe.every": probe_every, "probe.draws": PILOT_DRAWS}
        return self.config(candidate, lr=lr, steps=plan.steps, seed=seed, **probes)

    def screen(self, config: DictConfig, folder: Path, planned: float) -> Outcome:
        """A stage-1 run in memory: trained and evaluated, no probe, no files but one line in the ledger
        ``stage1.json`` (read back when the command runs again)."""
        key = folder.as_posix()
        if key not in self.ledger:
            self.ledger[key] = screen(config)
            atomic_write_text(
                self.root / LEDGER_FILE, json.dumps(self.ledger, indent=1, allow_nan=False) + "\n"
            )
        self.progress.update(planned)
        entry = self.ledger[key]
        score = math.inf if entry["score"] is None else float(entry["score"])
        outcome = Outcome(entry["status"], score, entry["metric"], self.root / folder, entry["error"])
        if outcome.status != OK:
            self.failures.append(f"{folder}: {outcome.status}: {outcome.error}")
        return outcome

    def run(
        self, config: DictConfig, folder: Path, planned: float, metric: str = "validation_objective"
    ) -> Outcome:
        folder = self.root / folder
        started = time.perf_counter()
        summary = finished_summary(folder, config)
        if summary is None:
            (folder / ".hydra").mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / ".hydra" / "config.yaml", OmegaConf.to_yaml(config))
            try:
                summary = same_point.run(config, folder)
            except ConfigError as error:
                summary = {"status": "failed", "error": str(error)}
        self.progress.update(planned)
        outcome = score(summary, folder, metric)
        outcome.wall_seconds = time.perf_counter() - started
        if outcome.status != OK:
            self.failures.append(f"{folder}: {outcome.status}: {outcome.error}")
        return outcome


def score(summary: dict[str, Any], folder: Path, metric: str) -> Outcome:
    status = str(summary.get("status"))
    if status != OK:
        return Outcome(status, math.inf, None, folder, summary.get("error"))
    found = final_value(folder / METRICS_FILE, metric) if (folder / METRICS_FILE).exists() else None
    if found is None:
        return Outcome("failed", math.inf, None, folder, "no objective recorded")
    value, read = found
    return Outcome(status, value if math.isfinite(value) else math.inf, read, folder)


def screen(config: DictConfig) -> dict[str, Any]:
    """Train ``config`` in memory (``bench.run.loop.train`` without probes or costs) and score it: the final
    validation objective, else the objective; +inf (``None``) when it diverged or failed."""
    from bench.run.build import setup
    from bench.run.loop import Diverged, Recorder, train

    try:
        torch.set_num_threads(int(config.threads or torch.get_num_threads()))
        torch.manual_seed(int(config.seed))
        task, estimator, optimizer = setup(config)
        final = train(config, task, estimator, optimizer, Recorder(Path(".")), measure=False)["final"]
    except Diverged as error:
        return {"status": "diverged", "score": None, "metric": None, "error": str(error.args[0])}
    except (ConfigError, EstimatorError) as error:
        return {"status": "failed", "score": None, "metric": None, "error": str(error)}
    except Exception as error:  # noqa: BLE001 - a screening run that breaks scores +inf, saying why
        return {
            "status": "failed",
            "score": None,
            "metric": None,
            "error": f"{type(error).__name__}: {error}",
        }
    metric = "validation_objective" if "validation_objective" in final else "objective"
    value = final.get(metric)
    if value is None or not math.isfinite(value):
        return {"status": "diverged", "score": None, "metric": metric, "error": f"final {metric} {value}"}
    return {"status": OK, "score": float(value), "metric": metric, "error": None}


def build_task(config: DictConfig):
    """The task of the run config, built from its seed (a task of your own through its factory)."""
    torch.manual_seed(int(config.seed))
    built = build(config.task)
    if isinstance(get_object(config.task._target_), type):  # a Task class of the benchmark's
        return built
    return check_task(built, f"task._target_={config.task._target_!r}")  # a factory of the user's


def pilot(plan: Plan, runner: Runner) -> None:
    """Time each candidate: a few training steps and one probe of ``PILOT_DRAWS`` draws, in memory; then one
    real run (files, costs, evaluation) of the cheapest for the cost of a run besides its steps. A candidate
    that cannot be built or fails is left out with its error."""
    kept = []
    for candidate in plan.candidates:
        config = runner.config(candidate, steps=PILOT_STEPS, seed=0)
        try:
            timing = time_candidate(config)
        except (ConfigError, EstimatorError) as error:
            plan.left_out[candidate.key] = str(error)
            continue
        except Exception as error:  # noqa: BLE001 - a candidate that breaks on the task is left out, saying why
            plan.left_out[candidate.key] = f"its pilot failed: {type(error).__name__}: {error}"
            continue
        candidate.lr = next((float(value) for _, value in learning_rates(config.optimizer, "optimizer")), 0.0)
        candidate.step_seconds, candidate.draw_seconds = timing
        kept.append(candidate)
    plan.candidates = kept
    if not kept:
        return
    cheapest = min(kept, key=lambda item: item.step_seconds)
    config = runner.config(
        cheapest, steps=PILOT_STEPS, seed=0, **{"probe.every": 0, "probe.draws": PILOT_DRAWS}
    )
    wall = 0.0
    for attempt in range(2):  # the first run of a process pays for what is loaded once
        started = time.perf_counter()
        runner.run(config, Path("pilot") / f"{safe_name(cheapest.key)}-{attempt}", 0.0)
        wall = time.perf_counter() - started
    overhead = max(0.0, wall - PILOT_STEPS * cheapest.step_seconds - PILOT_DRAWS * cheapest.draw_seconds)
    runner.failures.clear()
    for candidate in kept:
        candidate.run_seconds = overhead


def time_candidate(config: DictConfig) -> tuple[float, float]:
    """Seconds per training step (median of ``PILOT_STEPS`` after two warm-up steps) and per probe draw."""
    from bench.run.build import setup
    from bench.run.loop import batch_source
    from bench.run.probe import probe

    torch.set_num_threads(int(config.threads or torch.get_num_threads()))
    torch.manual_seed(int(config.seed))
    task, estimator, optimizer = setup(config)
    batch = batch_source(task, torch.Generator().manual_seed(0))(1)
    times = []
    for _ in range(PILOT_STEPS + 2):
        started = time.perf_counter()
        loss = task.loss(estimator, int(config.samples), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    step = statistics.median(times[2:])
    with torch.random.fork_rng(devices=[]):
        probe(task, estimator, int(config.samples), PILOT_DRAWS, "auto")  # the first call pays for set-up
        started = time.perf_counter()
        probe(task, estimator, int(config.samples), PILOT_DRAWS, "auto")
        draw = (time.perf_counter() - started) / PILOT_DRAWS
    return max(step, 1e-6), draw


def prepare(
    overrides: list[str], settings: Settings, root: Path, started: float, say: Callable[[str], None]
) -> Plan:
    """The plan: read back from ``plan.json`` when this command ran before, else made (candidates, pilot,
    sizes) and written there."""
    saved = root / PLAN_FILE
    if saved.is_file():
        try:
            document = json.loads(saved.read_text())
            if document.get("overrides") == overrides and document.get("settings") == settings.__dict__:
                say(f"[recommend] continuing the plan in {saved}")
                return Plan.from_dict(document["plan"])
        except (ValueError, KeyError, TypeError):
            pass
        say(f"[recommend] {saved} is of another command or unreadable: planning again")
    config = compose(["progress=false", *overrides])
    task = build_task(config)
    found, left_out, budget, enumeration = planning.candidates(config, task, settings)
    plan = Plan(str(config.task.name), overrides, found, left_out, budget, task.reference, enumeration)
    if not plan.candidates:
        raise ConfigError(
            f"no estimator can be recommended for task {config.task.name}: "
            + "; ".join(f"{name}: {why}" for name, why in left_out.items())
        )
    with tqdm(total=0, disable=True) as silent:
        pilot(plan, Runner(overrides, root, silent))
    if not plan.candidates:
        raise RecommendFailed(
            "every candidate failed its pilot run:\n" + "\n".join(f"  {k}: {v}" for k, v in left_out.items())
        )
    spent = time.perf_counter() - started
    remaining = settings.budget_minutes * 60 - spent
    planning.choose_sizes(plan, settings, remaining, int(config.steps))
    atomic_write_text(
        saved,
        json.dumps({"overrides": overrides, "settings": settings.__dict__, "plan": plan.as_dict()}, indent=2)
        + "\n",
    )
    return plan


def planned_seconds(plan: Plan, candidate: Candidate, probes: int = 0, screening: bool = False) -> float:
    """A run's planned seconds: its steps, its probes' draws and the cost of a run besides (a screening run
    in memory: ``SCREEN_SECONDS``)."""
    fixed = planning.SCREEN_SECONDS if screening else candidate.run_seconds
    return fixed + plan.steps * candidate.step_seconds + probes * candidate.draw_seconds


def run_protocol(
    arguments_overrides: list[str], settings: Settings, out: Callable[[str], None]
) -> dict[str, Any]:
    """Run the whole protocol; returns the recommendation document (also written as recommendation.json and
    recommendation.md in the folder)."""
    started = time.perf_counter()
    config = compose(["progress=false", *arguments_overrides])
    root = root_folder(settings, str(config.task.name), arguments_overrides)
    root.mkdir(parents=True, exist_ok=True)
    out(f"[recommend] {config.task.name}: budget {settings.budget_minutes:g} min; runs in {root}")
    plan = prepare(arguments_overrides, settings, root, started, out)
    out(f"[recommend] {planning.describe_budget(plan)}")
    total = sum(planned_seconds(plan, item, screening=True) * len(plan.grid) for item in plan.candidates)
    leaders_cost = sorted(
        (planned_seconds(plan, item, 8 * PILOT_DRAWS) for item in plan.candidates), reverse=True
    )
    total += sum(leaders_cost[: plan.leaders]) * len(plan.stage_two_seeds)
    total += sum(item.draw_seconds for item in plan.candidates) * plan.draws * CHECKPOINTS
    progress = tqdm(
        total=round(total, 2),
        desc="recommend",
        unit="s",
        file=sys.stderr,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} planned s [{elapsed}<{remaining}]",
        mininterval=1.0,
    )
    runner = Runner(arguments_overrides, root, progress)
    with progress:
        # Stage 1: every candidate at every learning rate of its grid, stage-1 seeds.
        progress.set_postfix_str("stage 1: learning rates")
        stage_one: dict[str, dict[float, list[Outcome]]] = {}
        for candidate in plan.candidates:
            for lr in plan.learning_rates(candidate):
                for seed in plan.stage_one_seeds:
                    config = runner.training(plan, candidate, lr, seed)
                    folder = Path("stage1") / safe_name(candidate.key) / f"lr={lr:g},seed={seed}"
                    outcome = runner.screen(config, folder, planned_seconds(plan, candidate, screening=True))
                    stage_one.setdefault(candidate.key, {}).setdefault(lr, []).append(outcome)
        if all(o.status != OK for rates in stage_one.values() for runs in rates.values() for o in runs):
            raise RecommendFailed("every stage-1 run failed:\n  " + "\n  ".join(runner.failures))
        chosen = {key: best_rate(rates) for key, rates in stage_one.items()}
        ranked = sorted(
            (item for item in plan.candidates if math.isfinite(chosen[item.key][1])),
            key=lambda item: chosen[item.key][1],
        )
        leaders = ranked[: plan.leaders]
        # Stage 2: the leaders at their chosen rate, fresh seeds, probed along the way (the curve's end).
        progress.set_postfix_str("stage 2: fresh seeds")
        stage_two: dict[str, list[Outcome]] = {}
        for candidate in leaders:
            lr = chosen[candidate.key][0]
            for seed in plan.stage_two_seeds:
                config = runner.training(plan, candidate, lr, seed, plan.probe_every)
                folder = Path("stage2") / safe_name(candidate.key) / f"seed={seed}"
                outcome = runner.run(config, folder, planned_seconds(plan, candidate, 8 * PILOT_DRAWS))
                stage_two.setdefault(candidate.key, []).append(outcome)
        if leaders and all(o.status != OK for runs in stage_two.values() for o in runs):
            raise RecommendFailed("every stage-2 run failed:\n  " + "\n  ".join(runner.failures))
        # Evidence: every candidate probed at the same parameters along the leader's trajectory.
        progress.set_postfix_str("evidence: same-point probes")
        evidence, evidence_note = None, None
        spent = time.perf_counter() - started
        left = settings.budget_minutes * 60 * 1.2 - spent
        per_draw = sum(item.draw_seconds for item in plan.candidates) * CHECKPOINTS
        # The evidence is the answer's "why": it runs even when the budget is spent, with fewer draws.
        draws = (
            plan.draws if per_draw <= 0 else int(min(plan.draws, max(MIN_EVIDENCE_DRAWS, left / per_draw)))
        )
        if leaders:
            evidence_config = study_config(runner, plan, leaders[0], chosen[leaders[0].key][0], draws)
            outcome = runner.run(evidence_config, Path("evidence"), per_draw * draws)
            if outcome.status == OK:
                evidence = read_evidence(outcome.folder, plan)
            else:
                evidence_note = f"the same-point evidence run {outcome.status}: {outcome.error}"
        progress.update(max(0.0, progress.total - progress.n))
    document = decide(plan, settings, stage_one, chosen, stage_two, evidence, evidence_note, runner.failures)
    document["elapsed_minutes"] = (time.perf_counter() - started) / 60
    document["folder"] = str(root)
    return document


def best_rate(rates: dict[float, list[Outcome]]) -> tuple[float, float]:
    """The learning rate with the lowest mean stage-1 score (+inf when a seed failed), ties to the first."""
    best = (next(iter(rates)), math.inf)
    for lr, outcomes in rates.items():
        mean = sum(outcome.score for outcome in outcomes) / len(outcomes)
        if mean < best[1]:
            best = (lr, mean)
    return best


def study_config(runner: Runner, plan: Plan, leader: Candidate, lr: float, draws: int) -> DictConfig:
    """A same-point study along the leader's trajectory (one seed), probing every candidate at equal cost at
    ``CHECKPOINTS`` checkpoints."""
    steps = sorted({0, plan.steps // 3, 2 * plan.steps // 3, plan.steps})
    names = sorted({item.estimator for item in plan.candidates})
    study = {
        "steps": steps,
        "estimators": names,
        "exclude": [],
        "samples": min(item.samples for item in plan.candidates if item.estimator == "rloo")
        if any(item.estimator == "rloo" for item in plan.candidates)
        else leader.samples,
        "equal_cost": True,
        "draws": draws,
        "warmup": 20,
        "variance_steps": 20,
        "variance_lr": 0.001,
        "bootstrap": 100,
        "baseline": "rloo" if "rloo" in names else names[0],
        "trajectory": None,
        "settings": {},
    }
    config = runner.config(
        leader,
        lr=lr,
        steps=plan.steps,
        seed=plan.stage_two_seeds[0],
        **{"probe.every": 0, "probe.draws": PILOT_DRAWS},
    )
    OmegaConf.set_struct(config, False)
    config.study = study
    config.checkpoint = {"steps": steps, "every": 0}
    return config
