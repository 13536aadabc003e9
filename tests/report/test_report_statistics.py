"""The report's statistics on hand-made runs: one interval method for tables and bands, runs ok/total, bias
verdicts with Holm's adjustment, rankings paired over seeds, MSE at a compute budget, the critical-difference
rule and time to target as time to an event (Kaplan–Meier)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.formats.contract import PROBE_FIELDS
from bench.report import ReportOptions, interval
from bench.report.comparisons import (
    COMPARISON_COLUMNS,
    TOO_FEW_SEEDS,
    critical_difference,
    rank,
    shared_estimators,
)
from bench.report.declarations import Column, Panel, parse_report
from bench.report.figures import figure_panels
from bench.report.gradients import crossing_of, error_parts, mse_at_budget, probe_point
from bench.report.markdown import (
    across_tasks,
    analyse,
    main_table,
    markdown_table,
    rankings_section,
    time_to_target_lines,
)
from bench.report.statistics import column_table, holm
from bench.report.survival import choose_target, crossing_time, events, kaplan_meier
from bench.report.write import curves_of, numeric

TASK = "demo"
PALETTE = {label: (0.2, 0.4, 0.6) for label in ("a", "b", "c", "exact")}


def frames(spec: dict[str, dict], seeds: int, steps=(0, 10, 20), reference: str = "analytic"):
    """Summaries and curves of runs: ``spec`` maps a label to its ``objective(seed, step)``, ``probe(seed,
    step)`` (a dict of probe fields) and summary fields (``status`` per seed, costs)."""
    summaries, metrics = [], []
    for label, fields in spec.items():
        for seed in range(seeds):
            run = f"{label}_{seed}"
            status = fields.get("status", {}).get(seed, "ok")
            last = {}
            for step in steps:
                metrics.append((run, step, "objective", fields["objective"](seed, step)))
                if "probe" in fields:
                    last = fields["probe"](seed, step)
                    metrics += [(run, step, name, value) for name, value in last.items()]
            summaries.append(
                {
                    "task": TASK,
                    "estimator": label,
                    "optimizer": "adam",
                    "label": label,
                    "seed": seed,
                    "status": status,
                    "reference": reference,
                    "run": run,
                    "root": "synthetic",
                    "task_report": "",
                    "steps": steps[-1],
                    "final_loss": fields["objective"](seed, steps[-1]),
                    "step_time_ms": fields.get("step_time_ms", 100.0),
                    "estimate_time_ms": fields.get("estimate_time_ms", 1.0),
                    "f_evals": fields.get("f_evals", 2),
                    "probe_draws": 64,
                    **{name: last.get(name, math.nan) for name in PROBE_FIELDS},
                }
            )
    summaries = numeric(pd.DataFrame(summaries))
    curves = curves_of(summaries, pd.DataFrame(metrics, columns=["run", "step", "metric", "value"]))
    return summaries, curves


def probe(variance, bias, p_value):
    """Probe fields from a variance, a squared bias (both relative to ‖g*‖² = 1) and a p-value."""
    return {
        "grad_variance": variance,
        "grad_variance_rel": variance,
        "grad_bias_sq": bias,
        "grad_bias_rel": bias,
        "grad_mse": variance + bias,
        "grad_cos": 0.9,
        "grad_bias_p": p_value,
    }


def test_the_interval_is_the_t_interval_and_on_the_log_scale_a_geometric_factor():
    values = [1.0, 2.0, 4.0]
    linear = interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert linear.center == pytest.approx(7 / 3) and linear.high - linear.center == pytest.approx(half)
    logarithmic = interval(values, log=True)  # log2 values 0, 1, 2: geometric mean 2
    factor = math.exp(stats.t.ppf(0.975, 2) * np.std(np.log(values), ddof=1) / math.sqrt(3))
    assert logarithmic.center == pytest.approx(2.0) and logarithmic.factor == pytest.approx(factor)
    assert logarithmic.low == pytest.approx(2.0 / factor) and logarithmic.low > 0  # never crosses zero
    assert linear.low < 0 < interval([1e-3, 1e-3, 1.0], log=True).low
    assert logarithmic.text() == f"2 ×/÷ {factor:.3g}" and linear.text() == f"2.333 ± {half:.2g}"
    assert interval([0.0, 0.0], log=True).text() == "0" and interval([3.0, 3.0]).text() == "3"
    assert "≤ 0 in 1 of 3 seeds" in interval([0.0, 1.0, 2.0], log=True).text()


def test_a_figure_band_and_the_table_interval_are_the_same_numbers(tmp_path):
    spec = {
        label: {
            "objective": lambda seed, step, k=k: 1.0 / (1 + step) + 0.1 * seed + k,
            "probe": lambda seed, step, k=k: probe(10.0 ** (k - seed) / (1 + step), 0.01, 0.5),
        }
        for k, label in enumerate(("a", "b"))
    }
    summaries, curves = frames(spec, seeds=3)
    for metric, log in (("grad_variance", True), ("objective", False)):
        stem = f"{TASK}_{metric}"
        figure_panels(TASK, stem, "", (Panel(metric, metric),), curves, PALETTE, tmp_path)
        band = pd.read_csv(tmp_path / f"{stem}.csv")
        table = column_table((Column(metric, metric, "last"),), curves, summaries)
        for label in ("a", "b"):
            drawn = band[(band["label"] == label) & (band["step"] == 20)].iloc[0]
            found = table.loc[label, "0"]
            assert found.log is log
            assert (drawn["center"], drawn["low"], drawn["high"]) == pytest.approx(
                (found.center, found.low, found.high)
            )
            assert table.loc[label, "runs"] == "3/3"


def test_every_table_row_shows_runs_ok_of_total_and_the_bias_verdict_is_holm_adjusted(tmp_path):
    # a: unbiased, p-values spread over (0, 1); b: biased, tiny p-values; a's seed 2 failed.
    spec = {
        "a": {
            "objective": lambda seed, step: 1.0 + seed,
            "probe": lambda seed, step: probe(1.0, 0.0, 0.01 + 0.3 * seed + step / 100),
            "status": {2: "failed"},
        },
        "b": {"objective": lambda seed, step: 2.0 + seed, "probe": lambda seed, step: probe(1.0, 0.5, 1e-6)},
    }
    summaries, curves = frames(spec, seeds=3)
    text = "\n".join(main_table(analyse(TASK, summaries, curves)))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| estimator | seeds | final_loss"))
    assert header.endswith("| runs ok/total |") and "grad_bias |" not in header and "bias test" in header
    row_a = next(line for line in lines if line.startswith("| a | 2 |"))
    row_b = next(line for line in lines if line.startswith("| b | 3 |"))
    # Holm over the 15 probes of the finished runs: a's smallest p (0.01) × 15 > 5%; b's 1e-6 × 15 < 5%.
    assert "no detectable bias (0 of 6 probes)" in row_a and row_a.endswith("| 2/3 |")
    assert "biased at 5% (9 of 9 probes, steps 0, 10, 20)" in row_b and row_b.endswith("| 3/3 |")
    assert "Holm over the 15 probes of this table" in text
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_rankings_are_paired_over_seeds_with_bootstrap_rank_intervals_and_holm_pairs():
    generator = np.random.default_rng(1)
    seed_effect = generator.normal(0, 5, size=6)  # large between seeds, cancelled by pairing
    values = pd.DataFrame(
        [
            (label, seed, seed_effect[seed] + shift + 0.01 * generator.normal())
            for label, shift in (("a", 0.0), ("b", 0.1), ("c", 0.2))
            for seed in range(6)
        ],
        columns=["label", "seed", "value"],
    )
    ranking = rank(TASK, "final_loss", values, log=False)
    assert ranking.table["label"].tolist() == ["a", "b", "c"]
    assert ranking.table[["rank_low", "rank_high"]].to_numpy().tolist() == [[1, 1], [2, 2], [3, 3]]
    pairs = ranking.pairs
    assert tuple(pairs.columns) == COMPARISON_COLUMNS and len(pairs) == 3
    first = pairs[(pairs["a"] == "a") & (pairs["b"] == "c")].iloc[0]
    differences = values[values.label == "a"].value.to_numpy() - values[values.label == "c"].value.to_numpy()
    raw = stats.ttest_rel(values[values.label == "a"].value, values[values.label == "c"].value).pvalue
    assert first["estimate"] == pytest.approx(differences.mean()) and first["ci_high"] < 0
    assert first["p_holm"] == pytest.approx(min(1.0, 3 * raw))  # the smallest of three p-values
    # The interval and the p-value printed beside it are adjusted the same way (neither): the unadjusted
    # interval excludes 0 exactly where the unadjusted p is below 5%.
    assert first["p"] == pytest.approx(raw)
    assert ((pairs["ci_low"] > 0) | (pairs["ci_high"] < 0)).tolist() == (pairs["p"] < 0.05).tolist()
    # Fewer than 5 seeds: no rank interval.
    few = rank(TASK, "final_loss", values[values["seed"] < 3], log=False)
    assert not few.rank_intervals and TOO_FEW_SEEDS == "too few seeds for rank intervals"


def test_mse_at_a_budget_includes_bias_and_ranks_an_exact_gradient_on_its_cost(tmp_path):
    # a: unbiased, variance 1, t = 1 ms; b: squared bias 0.1, variance 0.1, t = 1 ms; exact: t = 10 ms.
    spec = {
        "a": {"objective": lambda s, t: 1.0, "probe": lambda s, t: probe(1.0 * (1 + 0.01 * s), 0.0, 0.5)},
        "b": {"objective": lambda s, t: 1.0, "probe": lambda s, t: probe(0.1 * (1 + 0.01 * s), 0.1, 1e-9)},
        "exact": {
            "objective": lambda s, t: 1.0,
            "probe": lambda s, t: {**probe(0.0, 1e-30, math.nan)},
            "estimate_time_ms": 10.0,
        },
    }
    summaries, curves = frames(spec, seeds=3)
    ok = summaries[summaries["status"] == "ok"]
    point = probe_point(ok, curves)
    assert point.same_parameters
    parts = error_parts(point, {"exact"})
    at_two = dict(zip(parts["run"], mse_at_budget(parts, "estimate_time_ms", 2.0), strict=True))
    assert at_two["a_0"] == pytest.approx(0.5) and at_two["b_0"] == pytest.approx(0.1 + 0.05)
    assert at_two["exact_0"] == math.inf  # one exact gradient costs 10 ms > T
    assert mse_at_budget(parts, "estimate_time_ms", 10.0)[parts["label"] == "exact"].tolist() == [0.0] * 3
    # MSE_a = 1/T and MSE_b = 0.1 + 0.1/T cross where 0.9/T = 0.1: T* = 9 ms; exact is best from its cost on.
    (crossing,) = crossing_of("a", (0.0, 1.0, 1.0, False), "b", (0.1, 0.1, 1.0, False))
    assert (crossing.small, crossing.large, crossing.budget) == ("b", "a", pytest.approx(9.0))
    (exact,) = crossing_of("a", (0.0, 1.0, 1.0, False), "exact", (0.0, 0.0, 10.0, True))
    assert (exact.small, exact.large, exact.budget) == ("a", "exact", 10.0)
    lines, rankings = rankings_section(TASK, analyse(TASK, summaries, curves), budget_ms=2.0)
    text = "\n".join(lines)
    assert "Cannot afford one estimate within T: exact" in text and "has MSE 0 from T = 10 ms" in text
    budget = next(item for item in rankings if item.metric.startswith("MSE at budget T = 2 ms"))
    assert budget.table["label"].tolist() == ["b", "a"]


def test_no_ranking_on_gradient_quality_without_a_reference(tmp_path):
    spec = {
        label: {"objective": lambda s, t, k=k: k + s, "probe": lambda s, t: {"grad_variance": 1.0}}
        for k, label in enumerate(("a", "b"))
    }
    summaries, curves = frames(spec, seeds=2, reference="none")
    lines, rankings = rankings_section(TASK, analyse(TASK, summaries, curves))
    assert [ranking.metric for ranking in rankings] == ["final_loss"]
    assert any(line.startswith("No ranking on gradient quality") for line in lines)


def test_a_critical_difference_diagram_needs_five_tasks_sharing_the_estimators(tmp_path):
    rows = [
        {"task": f"t{task}", "estimator": name, "label": name, "seed": 0, "status": "ok", "final_loss": value}
        for task in range(5)
        for name, value in (("a", 1.0), ("b", 2.0 + task), ("c", 3.0))
    ]
    shared = shared_estimators(pd.DataFrame(rows))
    assert shared.tasks == [f"t{task}" for task in range(5)] and shared.estimators == ["a", "b", "c"]
    assert critical_difference(shared, tmp_path) == "critical_difference.png"
    assert (tmp_path / "critical_difference.png").stat().st_size > 5_000
    fewer = pd.DataFrame([row for row in rows if row["task"] != "t4"])
    assert len(shared_estimators(fewer).tasks) == 4
    text = "\n".join(across_tasks(fewer.assign(root=""), tmp_path))
    assert "No critical-difference diagram: it needs at least 5 tasks" in text and "here is 4" in text


def hand_made_runs(tmp_path=None):
    """Five seeds of one configuration, 100 ms per step, objective at steps 0, 10, 20, 30, 40; target 0.5."""
    curves = {
        0: [1.0, 0.6, 0.4, 0.3, 0.2],  # reaches 0.5 at step 15 (interpolated): 1.5 s
        1: [1.0, 0.5, 0.4, 0.3, 0.2],  # at step 10: 1.0 s
        2: [1.0, 0.8, 0.7, 0.45, 0.4],  # at step 20 + 10·(0.7 − 0.5)/(0.7 − 0.45) = 28: 2.8 s
        3: [1.0, 0.9, 0.8, 0.7, 0.6],  # never: censored at step 40, 4.0 s
        4: [1.0, 0.9, 0.8, 0.7, 0.6],
    }
    spec = {"a": {"objective": lambda seed, step: curves[seed][step // 10]}}
    return frames(spec, seeds=5, steps=(0, 10, 20, 30, 40))


def test_the_kaplan_meier_median_and_a_censored_seed_in_the_table(tmp_path):
    summaries, curves = hand_made_runs()
    assert crossing_time(np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.6, 0.4]), 0.5) == pytest.approx(1.5)
    found = events(curves, "objective", 0.5).set_index("seed")
    assert found["time"].tolist() == pytest.approx([1.5, 1.0, 2.8, 4.0, 4.0])
    assert found["reached"].tolist() == [True, True, True, False, False]
    # By hand: S(t) = Π over event times ≤ t of (1 − 1/at risk): at 1.0 s 4/5, at 1.5 s ·3/4, at 2.8 s ·2/3.
    survival, at_risk, median = 1.0, 5, None
    for time in (1.0, 1.5, 2.8):
        survival *= 1 - 1 / at_risk
        at_risk -= 1
        if median is None and survival <= 0.5:
            median = time
    assert median == 2.8
    fit = kaplan_meier(found["time"].to_numpy(), found["reached"].to_numpy())
    assert fit.median == pytest.approx(median) and fit.fraction_by(2.0)[0] == pytest.approx(0.4)
    options = ReportOptions(targets={TASK: 0.5})
    lines, _, _ = time_to_target_lines(TASK, analyse(TASK, summaries, curves), options, PALETTE, tmp_path)
    lines = "\n".join(lines).splitlines()
    row = next(line for line in lines if line.startswith("| a | 3/5 reached; 2 censored at 4 s |"))
    assert row.split("|")[3].strip().startswith("2.8 [")
    assert (tmp_path / f"{TASK}_time_to_target.png").exists()


def test_the_default_target_is_a_stated_fraction_of_the_gap_to_the_best_known_value():
    summaries, curves = hand_made_runs()
    missing = choose_target(summaries, curves, None)
    assert missing.value is None and missing.source == "no best known value"
    target = choose_target(summaries.assign(best_known_objective=0.0), curves, None, fraction=0.9)
    assert target.value == pytest.approx(0.1) and "90% of the way" in target.source
    declared = parse_report({"best_known": 0.2}).best_known
    assert choose_target(summaries, curves, None, 0.5, declared).value == pytest.approx(0.6)


def test_markdown_table_renders_rows():
    assert markdown_table(pd.DataFrame({"x": [1]})) == "| x |\n|---|\n| 1 |"


def test_the_command_line_refuses_a_bad_budget_or_fraction(tmp_path, capsys):
    from bench.cli.report import main

    assert main([str(tmp_path), "--budget", "demo"]) == 2
    assert "--budget 'demo': expected TASK=NUMBER" in capsys.readouterr().err
    assert main([str(tmp_path), "--budget", "demo=-1"]) == 2
    assert main([str(tmp_path), "--target-fraction", "1.5"]) == 2
    assert "--target-fraction must be in (0, 1]" in capsys.readouterr().err
