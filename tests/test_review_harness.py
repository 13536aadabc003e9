"""Review of the harness against DESIGN.md: report tables give mean ± 95% CI over seeds."""

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
