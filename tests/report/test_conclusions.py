"""The Conclusions paragraph of a report: what the numbers support, flagged where a comparison is unequal."""

from __future__ import annotations

import pandas as pd

from bench.report.comparisons import rank
from bench.report.conclusions import conclusions, versus_best


def test_no_difference_is_claimed_that_the_paired_interval_does_not_support():
    # Three configurations over 5 seeds: b is worse by 1.0 on every seed but one (a clear difference), c
    # differs from a by noise around zero. Only b may be called worse.
    values = []
    for seed in range(5):
        values += [("a", seed, 1.0 + 0.1 * seed), ("b", seed, 2.0 + 0.1 * seed + 0.01 * (seed % 2))]
        values += [("c", seed, 1.0 + 0.1 * seed + (-0.05 if seed % 2 else 0.05))]
    frame = pd.DataFrame(values, columns=["label", "seed", "value"])
    ranking = rank("task", "final_loss", frame, log=False)
    compared = versus_best(ranking, "a")
    assert compared["b"]["p_holm"] < 0.05 and compared["b"]["low"] > 0
    assert not (compared["c"]["p_holm"] < 0.05 and compared["c"]["low"] > 0)

    class Analysis:  # the parts of bench.report.markdown.TaskAnalysis the paragraph reads
        ok = pd.DataFrame(
            [
                {"label": label, "seed": seed, "final_loss": value, "run": f"{label}{seed}", "f_evals": 2}
                for label, seed, value in values
            ]
        )
        curves = pd.DataFrame(columns=["run", "metric", "step", "value"])
        verdicts = None
        reference = "none"
        deterministic: set = set()

    paragraph = " ".join(conclusions(Analysis, [ranking]))
    assert "Significantly worse than `a`" in paragraph and "`b`" in paragraph
    assert "`c` is not significantly different from it" in paragraph
    assert "at equal cost (2 evaluation(s) of f per estimate)" in paragraph
