"""The same-point study's intervals over seeds cover: a simulation of the study's own statistic (the per-seed
log ratio of an estimator's MSE to rloo's) at 5 seeds, with normal and heavy-tailed draws; the percentile
bootstrap it replaced fails the same check (the negative control). Also: the paired standard error of the
log ratio behind the figure's per-seed bars, and the note a table gives when its seeds share one
trajectory."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.campaigns.same_point.paired import DrawNorms, paired_statistics
from bench.formats.contract import PAIRED_HEADER
from bench.report.same_point.coverage import (
    KINDS,
    STATED,
    STATED_REPLICATES,
    binomial_band,
    coverage,
    t_interval,
)
from bench.report.same_point.markdown import seed_lines, task_lines
from bench.report.same_point.statistics import MINIMUM_SEEDS, over_seeds, shared_trajectory
from bench.report.same_point.tables import RUN_COLUMNS


@pytest.mark.parametrize("kind", KINDS)
def test_the_t_interval_covers_95_percent_at_5_seeds_and_the_percentile_bootstrap_does_not(kind):
    # 4000 simulated studies of 5 seeds × 5 checkpoints × 16 draws (bench.report.same_point.coverage). A
    # method of coverage 0.95 gives a count in the 99.9% band of Binomial(4000, 0.95), [3753, 3844] (0.938
    # to 0.961): so the true coverage of a method inside it is at least 0.93. The percentile bootstrap over
    # the same 5 seeds' values (coverage about 0.83) must fall below the band: the check can fail.
    low, high = binomial_band(STATED_REPLICATES)
    assert low / STATED_REPLICATES >= 0.93
    found = coverage(kind, STATED_REPLICATES, seed=0)
    assert low <= found["t-interval"] <= high, found
    assert found["percentile bootstrap"] < low, found
    # The rates the report states are these (up to a few replicates: floating point differs between CPUs).
    for method, covered in found.items():
        assert abs(covered - STATED[(method, kind)]) <= 8, (method, covered)


def test_the_report_computes_the_simulated_interval_and_none_below_the_minimum_seeds():
    generator = np.random.default_rng(1)
    logs = generator.normal(-0.5, 0.4, size=(3, 5))
    low, high = t_interval(logs)
    for row, lower, upper in zip(logs, low, high, strict=True):
        centre, found_low, found_high, count = over_seeds(pd.Series(np.exp(row)), log=True)
        assert count == 5 and centre == pytest.approx(math.exp(row.mean()))
        assert (found_low, found_high) == pytest.approx((math.exp(lower), math.exp(upper)))
    few = over_seeds(pd.Series(np.exp(logs[0, : MINIMUM_SEEDS - 1])), log=True)
    assert MINIMUM_SEEDS == 3 and math.isnan(few[1]) and math.isnan(few[2]) and few[3] == 2


def test_the_paired_standard_error_of_the_log_ratio_is_the_spread_of_repeated_probes():
    # 600 probes of M = 256 correlated draws: the standard deviation of log(mse_ratio) over the probes and
    # the mean of the reported standard errors agree. The sd of 600 draws has a relative standard error of
    # 1/√1200 = 2.9%; the delta method is exact to O(1/M): 4 standard errors, 12%, is the tolerance.
    generator = np.random.default_rng(2)
    logs, errors = [], []
    for _ in range(600):
        common = generator.normal(size=(256, 3))
        other = 0.7 * common + math.sqrt(1 - 0.49) * generator.normal(size=(256, 3))
        a = DrawNorms(((2.0 * other) ** 2).sum(1), np.zeros(256))
        b = DrawNorms((common**2).sum(1), np.zeros(256))
        found = paired_statistics(a, b, np.ones(1), np.ones(1))
        logs.append(math.log(found["mse_ratio"]))
        errors.append(found["mse_log_ratio_se"])
    assert np.mean(errors) == pytest.approx(np.std(logs, ddof=1), rel=0.12)
    assert np.mean(logs) == pytest.approx(math.log(4.0), abs=4 * np.std(logs) / math.sqrt(600))


def study_rows(values_by_seed: dict[int, float], digests: bool) -> pd.DataFrame:
    """A toy trajectory's study.csv rows: two checkpoints, per seed a checkpoint value (‖g*‖) and two
    estimators' MSEs."""
    rows = []
    for seed, value in values_by_seed.items():
        for checkpoint, step in enumerate((0, 10)):
            digest = f"{value + step:.6f}" if digests else math.nan
            rows.append(("exact", seed, checkpoint, step, digest, "exact", math.nan, "reference_norm", value))
            for estimator, mse in (("rloo", 1.0), ("st", 2.0 + seed)):
                rows.append(
                    ("exact", seed, checkpoint, step, digest, estimator, 2.0, "grad_mse", mse * value)
                )
                rows.append(("exact", seed, checkpoint, step, digest, estimator, 2.0, "grad_variance", mse))
    columns = ["trajectory", "seed", "checkpoint", "step", "params_digest", "estimator", "samples"]
    frame = pd.DataFrame(rows, columns=[*columns, "metric", "value"])
    return frame.assign(task="toy", study_baseline="rloo")


@pytest.mark.parametrize("digests", [True, False])
def test_seeds_that_share_one_trajectory_are_said_to(digests):
    # With digests (a study's own tables) or without (the results page drops them): the checkpoint values.
    shared = study_rows({0: 0.5, 1: 0.5, 2: 0.5}, digests)
    apart = study_rows({0: 0.5, 1: 0.6, 2: 0.7}, digests)
    assert shared_trajectory(shared) and not shared_trajectory(apart)
    assert not shared_trajectory(shared[shared["seed"] == 0])  # one seed: nothing shared
    said = "\n".join(seed_lines(3, shared))
    assert "The 3 seeds share one trajectory" in said and "probes' own noise" in said
    assert seed_lines(3, apart) == []
    assert "Only 2 seed(s): fewer than 3" in "\n".join(seed_lines(2, apart[apart["seed"] < 2]))


def test_a_study_table_names_its_bias_family_and_its_intervals_coverage(tmp_path, monkeypatch):
    import bench.report.same_point.markdown as markdown

    for figure in ("figure_progress", "figure_paired"):  # the text is under test, not the drawing
        monkeypatch.setattr(markdown, figure, lambda *arguments: "drawn.png")
    study = study_rows({0: 0.5, 1: 0.5, 2: 0.5}, digests=True)
    probes = study[study["metric"] == "grad_mse"].assign(metric="grad_bias_p", value=0.5)
    paired = pd.DataFrame(columns=[*RUN_COLUMNS, *PAIRED_HEADER])
    said = "\n".join(task_lines("toy", pd.concat([study, probes]), paired, tmp_path))
    assert "The 3 seeds share one trajectory" in said
    assert "Bias test: Holm over the 12 probes of this table" in said  # 2 estimators × 3 seeds × 2 steps
    assert "Intervals over seeds: its coverage at 5 seeds" in said and "percentile bootstrap" in said
