"""The held-out check of a tuned study: ``tuning.heldout`` names a variant of the problem; the chosen settings
rerun there with the final seeds (``heldout/``), and the report flags every optimizer whose rank interval on
the variant does not overlap its rank interval on the tuned problem (bench.report.tuning)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from bench.campaigns import tuning
from bench.formats.errors import ConfigError
from bench.report.tuning import StageTwo, heldout_table, rank_intervals


def quadratic(root) -> list[str]:
    return [
        "task=quadratic",
        "task.dim=4",
        "steps=20",
        "log_every=10",
        "probe.draws=2",
        "progress=false",
        "threads=1",
        f"hydra.sweep.dir={root}",
        "+tuning={seeds:[0],final_seeds:[1,2,3,4,5],metric:objective,heldout:{task.dim:8,task.start:2.0},"
        "optimizers:{sgd:{lr:[0.3,1.0]}}}",
    ]


def test_the_chosen_settings_rerun_on_the_heldout_variant(tmp_path):
    # Stage 1's outcomes made up (sgd's lr=1.0 scores best), so that no run is needed to plan the reruns.
    plan = tuning.plan_from_command_line(quadratic(tmp_path))
    outcomes = {
        point: tuning.Outcome("ok", 0.5 if dict(point.setting).get("optimizer.lr") == 1.0 else 1.0, "x", None)
        for option in plan.spec.grids
        for point in plan.points(option)
    }
    document = tuning.choose(plan, outcomes)
    assert document["heldout"] == {"task.dim": 8, "task.start": 2.0}
    final = plan.stage_two(document)
    [heldout] = plan.stage_two(document, heldout=True)  # the chosen setting, the final seeds, the variant
    line = heldout.command()
    assert "optimizer=sgd" in line and "optimizer.lr=1.0" in line and "task.start=2.0" in line
    assert "task.dim=8" in line and "task.dim=4" not in line
    assert "seed=1,2,3,4,5" in line and heldout.folder == tmp_path / "heldout" / "sgd"
    assert "task.dim=4" in final[0].command()  # stage 2 itself: the tuned problem
    plan.spec = replace(plan.spec, heldout={})
    assert plan.stage_two(document, heldout=True) == []


def test_a_heldout_variant_must_be_single_values():
    with pytest.raises(ConfigError, match="tuning.heldout must map override keys to single values"):
        tuning.parse_spec(
            {
                "seeds": [0],
                "final_seeds": [1, 2, 3, 4, 5],
                "optimizers": {"sgd": {}},
                "heldout": {"a": [1, 2]},
            }
        )


def values(means: dict[str, float], spread: float = 0.01) -> pd.DataFrame:
    """Five seeds per optimizer around ``means`` (deviations −2..2 × spread: a 95% t-interval of ±1.96 ×
    spread around the mean)."""
    return pd.DataFrame(
        [
            {"condition": "default", "optimizer": name, "seed": seed, "value": mean + spread * (seed - 2)}
            for name, mean in means.items()
            for seed in range(5)
        ]
    )


def stage(means: dict[str, float], spread: float = 0.01) -> StageTwo:
    runs = values(means, spread).rename(columns={"value": "final_loss"}).assign(status="ok")
    return StageTwo(runs, pd.DataFrame())


DOCUMENT = {"choices": [{"condition_label": "default"}], "heldout": {"task.zipf": 1.3}}


def test_rank_intervals_follow_the_confidence_intervals():
    # a and b overlap (both rank 1–2), c lies wholly above both (rank 3).
    table = rank_intervals(values({"a": 1.0, "b": 1.02, "c": 2.0})).set_index("optimizer")
    assert (table.loc["a", "best"], table.loc["a", "worst"]) == (1, 2)
    assert (table.loc["b", "best"], table.loc["b", "worst"]) == (1, 2)
    assert (table.loc["c", "best"], table.loc["c", "worst"]) == (3, 3)


def test_a_ranking_that_changes_on_the_heldout_variant_is_flagged():
    tuned = stage({"a": 1.0, "b": 2.0, "c": 3.0})
    flipped = heldout_table(DOCUMENT, tuned, stage({"a": 3.0, "b": 2.0, "c": 1.0})).set_index("optimizer")
    assert (
        flipped.loc["a", "ranking changed"] == "**yes**" and flipped.loc["c", "ranking changed"] == "**yes**"
    )
    assert flipped.loc["b", "ranking changed"] == "no"  # rank 2 on both
    assert (flipped.loc["a", "rank"], flipped.loc["a", "held-out rank"]) == ("1", "3")
    # Negative control: the same order, shifted, and an order change within overlapping intervals.
    same = heldout_table(DOCUMENT, tuned, stage({"a": 5.0, "b": 6.0, "c": 7.0}))
    assert (same["ranking changed"] == "no").all()
    close = heldout_table(DOCUMENT, tuned, stage({"a": 2.01, "b": 2.0, "c": 3.0}, spread=0.05))
    assert (close["ranking changed"] == "no").all()
