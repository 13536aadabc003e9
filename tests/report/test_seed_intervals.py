"""Report tables give mean ± 95% CI over distinct seeds, and configurations that look alike are not pooled."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from bench.report import aggregate


def test_report_ci_is_over_distinct_seeds_when_a_seed_was_run_twice() -> None:
    # The same configuration and seed found twice below the report folder (a single run beside a sweep, or a
    # sweep re-run with force=true into another folder) is one replicate, not two: the table's "seeds" column
    # and the n of its t-interval must be the same number, the count of distinct seeds.
    frame = pd.DataFrame(
        {
            "task": ["toy"] * 3,
            "label": ["st"] * 3,
            "status": ["ok"] * 3,
            "reference": ["analytic"] * 3,
            "seed": [0, 0, 1],
            "final_loss": [1.0, 1.0, 3.0],
        }
    )
    row = aggregate(frame, ["final_loss"]).iloc[0]
    assert row["seeds"] == 2
    # Over the seeds {0: 1.0, 1: 3.0}: mean 2, half-width t_{0.975, 1} · sd / √2 with sd = √2.
    assert math.isclose(row["final_loss"], 2.0), row["final_loss"]
    expected_half = stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2)
    assert math.isclose(row["final_loss_ci95"], expected_half), (row["final_loss_ci95"], expected_half)


def test_configurations_that_look_alike_are_not_pooled(config_factory, tmp_path):
    # Seeds of one configuration share a label; the same names with a different setting (here `steps`) get
    # labels told apart by a fingerprint. These runs have no .hydra/ (the runner called directly), so their
    # labels come from their summaries, where nothing but the fingerprint tells them apart.
    from bench.report import load_runs
    from bench.run.runner import run

    for seed in (0, 1):
        run(
            config_factory("task=toy", "estimator=st", "steps=20", "probe.draws=4", f"seed={seed}"),
            tmp_path / f"a{seed}",
        )
    run(config_factory("task=toy", "estimator=st", "steps=30", "probe.draws=4", "seed=0"), tmp_path / "b0")
    summaries = load_runs(tmp_path).summaries.set_index("run")
    assert summaries.loc["a0", "label"] == summaries.loc["a1", "label"]
    assert summaries.loc["a0", "label"] != summaries.loc["b0", "label"]
    assert summaries.loc["a0", "label"].startswith("st [")
