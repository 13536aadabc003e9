"""Every experiment config composes, and every distinct (task, estimator, optimizer) in them trains.

Like lightning-hydra-template's `experiment=glob(*)` smoke test: every run of every `conf/experiment/*.yaml`
(the product of its sweeper's parameters) is composed, and one run per distinct (task, estimator,
optimizer) trains for two steps into a temporary folder, at seed 0 and the first value of every other swept
key, with overrides that keep it cheap (`CHEAP`, applied where the composed config has the key). New
experiments are picked up by themselves; the cost grows with the distinct combinations, not the runs.
"""

from __future__ import annotations

import itertools
import json
from functools import cache

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bench.campaigns.same_point import run
from tests.helpers import CONF, make_config

# Settings that make a two-step run cheap; each applies only where the composed config has the key.
CHEAP = {
    "steps": 2,
    "log_every": 1,
    "probe.every": 0,
    "probe.draws": 2,
    "task.eval_samples": 2,
    "task.train_size": 2_000,
    "task.test_size": 500,
    "task.eval_size": 500,
    "task.usage_images": 200,
    "task.reference_draws": 4,
}


def experiments() -> list[str]:
    return sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


def sweep_points(name: str) -> list[list[str]]:
    """Every run of experiment ``name``: the product of its sweeper's parameters, as override lists."""
    node = OmegaConf.load(CONF / "experiment" / f"{name}.yaml")
    params = OmegaConf.select(node, "hydra.sweeper.params") or {}
    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        override = parser.parse_overrides([f"{key}={value}"])[0]
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
        axes.append([f"{key}={item}" for item in values])
    return [list(point) for point in itertools.product(*axes)] or [[]]


@cache
def composed() -> dict[str, list[tuple[list[str], tuple[str, str, str]]]]:
    """Per experiment, each run's overrides and its (task, estimator, optimizer) names."""
    found = {}
    for name in experiments():
        runs = []
        for point in sweep_points(name):
            config = make_config(f"+experiment={name}", *point)
            runs.append((point, (config.task.name, config.estimator.name, config.optimizer.name)))
        found[name] = runs
    return found


def selecting(point: list[str]) -> tuple[str, ...]:
    """The overrides of a sweep point that can change the run's (task, estimator, optimizer) names: config
    group choices (``estimator=rloo``, ``optimizer@optimizer.inner=sgd``) and ``*.name`` keys, not the seed
    or values such as learning rates."""
    kept = []
    for item in point:
        key = item.split("=", 1)[0].lstrip("+~")
        if key != "seed" and ("." not in key or "@" in key or key.endswith("name")):
            kept.append(item)
    return tuple(kept)


def smoke_runs() -> list[tuple[str, list[str]]]:
    """One run per distinct (task, estimator, optimizer): the first point that has it, at seed 0. Composed
    once per distinct group choice (at collection, in every pytest-xdist worker: composing all 315 sweep
    points took a minute there; ``test_every_run_of_every_experiment_composes`` composes them all, once)."""
    chosen: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
    for name in experiments():
        seen = set()
        for point in sweep_points(name):
            if selecting(point) in seen:
                continue
            seen.add(selecting(point))
            config = make_config(f"+experiment={name}", *point)
            names = (config.task.name, config.estimator.name, config.optimizer.name)
            if names not in chosen:
                chosen[names] = (name, [item for item in point if not item.startswith("seed=")] + ["seed=0"])
    return [chosen[names] for names in sorted(chosen)]


def test_every_run_of_every_experiment_composes():
    runs = composed()
    assert set(runs) == set(experiments()) and all(runs.values())
    for name, points in runs.items():
        assert all(all(names) for _, names in points), name


@pytest.mark.parametrize(("experiment", "point"), smoke_runs(), ids=lambda value: str(value))
def test_each_distinct_combination_trains_two_steps(experiment, point, tmp_path):
    config = make_config(f"+experiment={experiment}", *point)
    for key, value in CHEAP.items():
        if OmegaConf.select(config, key, default=None) is not None:
            OmegaConf.update(config, key, value)
    config.threads = 1
    summary = run(config, tmp_path)
    assert summary["status"] == "ok", summary["error"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 2


def tuned_experiments() -> list[str]:
    return [
        name for name in experiments() if OmegaConf.load(CONF / "experiment" / f"{name}.yaml").get("tuning")
    ]


@pytest.mark.parametrize("experiment", tuned_experiments())
def test_tuned_experiment_runs_both_stages(experiment, tmp_path):
    """Stage 1 writes tuning.json; stage 2 reruns its choice with the final seeds, read from that file. The
    study is cut to its first optimizer, first grid point and first condition, each run to two steps."""
    from bench.campaigns import tuning
    from bench.cli import tune

    node = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml").tuning)
    first, *others = node["optimizers"]
    axes, _ = tuning.spec.split_grid(node["optimizers"][first], f"tuning.optimizers.{first}")
    cut = ["tuning.stage_one=[]", *(f"~tuning.optimizers.{name}" for name in others)]  # probe.every=0: CHEAP
    cut += [f"{key}=[{tuning.plan.text(values[0])}]" for key, values in axes.items()]
    text = tuning.plan.text
    conditions = [f"{key}:[{text(values[0])}]" for key, values in node.get("conditions", {}).items()]
    cut += [f"tuning.conditions={{{','.join(conditions)}}}"] if conditions else []
    config = make_config(f"+experiment={experiment}")
    cheap = [f"{key}={value}" for key, value in CHEAP.items()]
    cheap = [item for item in cheap if OmegaConf.select(config, item.split("=")[0], default=None) is not None]
    arguments = [f"+experiment={experiment}", *cheap, "progress=false", f"hydra.sweep.dir={tmp_path}", *cut]
    assert tune.main([*arguments, "--stage", "1"]) == 0
    document = json.loads((tmp_path / tuning.TUNING_FILE).read_text())
    [choice] = document["choices"]
    assert choice["chosen"] is not None and len(choice["scores"]) == 1
    assert tune.main([*arguments, "--stage", "2"]) == 0
    summaries = sorted((tmp_path / choice["stage_two"]).glob("*/summary.json"))
    seeds = sorted(json.loads(path.read_text())["seed"] for path in summaries)
    assert seeds == sorted(document["final_seeds"])
    assert all(json.loads(path.read_text())["status"] == "ok" for path in summaries)
