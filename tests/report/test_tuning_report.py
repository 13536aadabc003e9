"""The report's tuned-study section (``bench.report.tuning``) on small hand-made tables: the paired
difference from the baseline, the sensitivity table's profile over other axes, the performance profile's
ratios, and stage-1 runs left out of the report's runs. Nothing here trains."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bench.report import tuning
from bench.report.read import load_runs
from bench.report.statistics import interval, t_quantile


def choice(name, condition, scores, chosen, grid):
    return {
        "optimizer": name,
        "name": name,
        "condition": condition,
        "condition_label": ",".join(f"{k}={v}" for k, v in condition.items()) or "default",
        "metric": "validation_objective",
        "grid": grid,
        "fixed": {},
        "budget": {"settings": len(scores), "seeds": 2, "runs": 2 * len(scores), "steps": 10},
        "scores": scores,
        "chosen": chosen,
        "score": None,
        "at_edge": [],
        "stage_two": f"final/{name}",
    }


def score(setting, values):
    finite = [value for value in values if value is not None]
    mean = sum(finite) / len(values) if len(finite) == len(values) else None
    return {"setting": setting, "seeds": [0, 1], "values": values, "statuses": ["ok"] * 2, "mean": mean}


def test_final_table_pairs_over_seeds_and_marks_a_difference_that_excludes_zero():
    document = {
        "baseline": "adam",
        "choices": [choice("adam", {}, [], {}, {}), choice("lookahead", {}, [], {}, {})],
    }
    seeds = [100, 101, 102, 103, 104]
    adam = [2.0, 3.0, 4.0, 5.0, 6.0]  # a large spread over seeds ...
    lookahead = [value - 0.1 - 0.01 * index for index, value in enumerate(adam)]  # ... a small paired gain
    runs = pd.DataFrame(
        [
            {"condition": "default", "optimizer": name, "seed": seed, "final_loss": value, "status": "ok"}
            for name, values in (("adam", adam), ("lookahead", lookahead))
            for seed, value in zip(seeds, values, strict=True)
        ]
    )
    table = tuning.final_table(document, tuning.StageTwo(runs, pd.DataFrame()))
    difference = table.loc[0, "lookahead − adam"]
    diffs = [b - a for a, b in zip(adam, lookahead, strict=True)]
    half = t_quantile(5) * pd.Series(diffs).std(ddof=1) / math.sqrt(5)
    assert difference.startswith(f"{sum(diffs) / 5:.4g} ± {half:.2g}") and difference.endswith("(lower)")
    unpaired = interval(lookahead)  # unpaired, the spread over seeds hides the gain
    assert unpaired.low < sum(adam) / 5 < unpaired.high


def test_sensitivity_profiles_other_axes_at_each_learning_rate():
    grid = {"optimizer.inner.lr": [0.1, 1.0], "optimizer.k": [5, 10]}
    scores = [
        score({"optimizer.inner.lr": 0.1, "optimizer.k": 5}, [3.0, 3.2]),
        score({"optimizer.inner.lr": 0.1, "optimizer.k": 10}, [2.0, 2.2]),
        score({"optimizer.inner.lr": 1.0, "optimizer.k": 5}, [1.0, None]),  # a diverged seed: +inf
        score({"optimizer.inner.lr": 1.0, "optimizer.k": 10}, [1.5, 1.7]),
    ]
    chosen = {"optimizer.inner.lr": 1.0, "optimizer.k": 10}
    table = tuning.sensitivity_table({"choices": [choice("lookahead", {}, scores, chosen, grid)]})
    profile = table[table["profile"]].groupby("lr")["mean"].first()
    assert profile.to_dict() == pytest.approx({0.1: 2.1, 1.0: 1.6})
    assert table.loc[table["chosen"], "setting"].unique().tolist() == ["inner.lr=1, k=10"]
    assert table["value"].isna().sum() == 1


def test_profile_ratios_to_the_best_time_and_unreached_targets():
    table = tuning.profile_table(
        {"a": {"adam": 2.0, "lazy": 1.0}, "b": {"adam": 3.0, "lazy": math.inf}, "c": {"adam": 1.0}}
    )
    ratios = table.set_index(["problem", "optimizer"])["ratio"]
    assert ratios[("a", "adam")] == 2.0 and ratios[("a", "lazy")] == 1.0
    assert ratios[("b", "adam")] == 1.0 and math.isinf(ratios[("b", "lazy")])
    adam = table.loc[table["optimizer"] == "adam", "ratio"]
    assert tuning.profile_fraction(adam, 1.0) == pytest.approx(2 / 3)
    assert tuning.profile_fraction(adam, 2.0) == 1.0


def test_stage_one_runs_are_left_out_and_the_tuning_file_is_collected(tmp_path):
    study = tmp_path / "study"
    for folder, loss in (("tune/adam/lr=0.1", 9.0), ("final/adam/seed=100", 1.0)):
        run = study / folder
        run.mkdir(parents=True)
        summary = {
            "task": "toy",
            "estimator": "rloo",
            "optimizer": "adam",
            "status": "ok",
            "final_loss": loss,
        }
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "metrics.csv").write_text("step,metric,value\n0,objective,1.0\n")
    (study / "tuning.json").write_text(json.dumps({"experiment": "x", "choices": []}))
    runs = load_runs(tmp_path, skip=tuple(tuning.stage_one_prefixes(tmp_path)))
    assert runs.summaries["run"].tolist() == ["study/final/adam/seed=100"]
    assert tuning.collect_tuning(tmp_path, tmp_path / "report") == 1
    [document] = tuning.read_studies(tmp_path / "report")
    assert document["root"] == "study"
