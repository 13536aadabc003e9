"""``python -m bench.perf`` runs, reports every measurement it was asked for, and its bare-loop baseline
computes what the harness computes.

No timing is asserted here (speed is measured by ``python -m bench.perf`` itself): only that the ratios and
their intervals are computed from the recorded times, that verdicts follow the interval and the goal's
direction, that the stopping rule stops when it should, that FLOPs are counted inside ``torch.func``, that a
failing measurement is reported as an error without hiding the others, and that the bare loop's losses are
the harness's.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

import bench.cli.perf as cli
from bench.campaigns.perf import Result
from bench.campaigns.perf.arithmetic import count, limit_fields
from bench.campaigns.perf.bare import bare_vae_steps, seeded_setup
from bench.campaigns.perf.measurements import measure_lazy_adam
from bench.campaigns.perf.verdicts import StoppingRule, ratio_interval, repeat_until, verdict
from bench.cli.perf import main
from bench.run.loop import Recorder, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def result_with_ratios(kind: str, goal: float | None, ratios: list[float]) -> Result:
    """A result whose repeats gave these ratios (candidate 1 s; the baseline set to match)."""
    baseline = [ratio if kind == "speedup" else 1 / ratio for ratio in ratios]
    return Result("r", "", "b", "c", kind, goal=goal, baseline_s=baseline, candidate_s=[1.0] * len(ratios))


def test_verdict_needs_the_whole_interval_on_one_side_of_the_goal() -> None:
    steady = [19.0, 20.0, 21.0, 20.5, 19.5, 20.2]
    assert result_with_ratios("speedup", 10.0, steady).verdict == "met"
    assert result_with_ratios("speedup", 30.0, steady).verdict == "missed"
    assert result_with_ratios("speedup", 20.0, steady).verdict == "undecided"
    # Wide spread around the goal: the median (10.5) is above it, but the interval says nothing.
    scattered = [3.4, 25.2, 6.2, 15.2, 10.5, 8.0, 30.0]
    wide = result_with_ratios("speedup", 10.0, scattered)
    assert wide.ratio == pytest.approx(10.5) and wide.verdict == "undecided" and wide.goal_met is None
    low, high = wide.interval
    assert low < 10.0 < high
    # An upper bound (a cost ratio): met below it, missed above it.
    assert result_with_ratios("ratio", 1.10, [1.01, 1.02, 1.03, 1.02, 1.01]).goal_met is True
    assert result_with_ratios("ratio", 1.10, [1.20, 1.22, 1.25, 1.21, 1.23]).goal_met is False
    assert result_with_ratios("ratio", None, [1.2, 1.3]).verdict is None  # for information
    record = result_with_ratios("ratio", 1.10, [1.2, 1.3]).record()
    assert record["goal"] == "≤ 1.1×" and record["ratio_min"] == pytest.approx(1.2) and record["repeats"] == 2
    failed = Result("c", "", "x", "y", "ratio", goal=1.0, status="error")
    assert failed.ratio is None and failed.verdict is None and failed.interval is None
    assert verdict((0.9, 1.2), 1.1, speedup=False) == "undecided"


def test_interval_resamples_whole_repeats() -> None:
    """A load that slows baseline and candidate alike within a repeat leaves every ratio at 10: resampling
    pairs keeps the interval at [10, 10]; resampling the two columns apart would spread it."""
    load = [1.0, 3.0, 1.5, 5.0, 2.0, 1.2]
    candidate = [0.1 * factor for factor in load]
    assert ratio_interval(load, candidate, speedup=True) == pytest.approx((10.0, 10.0))
    noisy = [1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.15, 1.0]
    first = ratio_interval(noisy, [0.1] * 8, speedup=True)
    assert first == ratio_interval(noisy, [0.1] * 8, speedup=True)  # a fixed seed: the same times, the same
    assert first[0] <= 10.25 <= first[1]  # the median of the ratios is inside
    assert ratio_interval([1.0], [1.0], speedup=True) is None


def test_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    """Coverage over 100 simulated comparisons of 30 repeats, log-normal ratios with median 2 (σ = 0.3).

    The binomial standard error of a 95% coverage over 100 trials is √(0.95·0.05/100) = 2.2%; the percentile
    bootstrap of a median at n = 30 is known to cover a little less than nominal, so the test asks for
    coverage no lower than 4 standard errors below 95% (0.863). The negative control moves the truth by 20%:
    an interval that covered it most of the time would be too wide to decide anything.
    """
    generator = np.random.default_rng(7)
    trials, repeats, true_median = 100, 30, 2.0
    covered = shifted = 0
    for _ in range(trials):
        ratios = true_median * np.exp(0.3 * generator.standard_normal(repeats))
        low, high = ratio_interval(list(ratios), [1.0] * repeats, speedup=True)
        covered += low <= true_median <= high
        shifted += low <= 1.2 * true_median <= high
    standard_error = math.sqrt(0.95 * 0.05 / trials)
    assert covered / trials >= 0.95 - 4 * standard_error, covered
    assert shifted / trials < 0.5, shifted


def test_stopping_rule_stops_on_a_narrow_interval_at_the_cap_or_at_most() -> None:
    calls: list[int] = []
    repeats, reason = repeat_until(calls.append, lambda half_width: True, StoppingRule(least=4, most=50))
    assert repeats == 4 == len(calls) and "within ±10%" in reason
    ticks = iter(range(1000))  # a clock that reads 0 at the start and 1 s more at every reading after it
    repeats, reason = repeat_until(
        lambda _: None,
        lambda half_width: False,
        StoppingRule(1, 50, time_cap_s=4.5),
        clock=lambda: next(ticks),
    )
    assert "time cap" in reason and repeats == 5
    repeats, reason = repeat_until(lambda _: None, lambda half_width: False, StoppingRule(2, 5))
    assert repeats == 5 and "the most allowed" in reason
    repeats, reason = repeat_until(lambda _: None, lambda half_width: True, StoppingRule.fixed(3))
    assert repeats == 3 and "as asked" in reason
    with pytest.raises(ValueError, match="least <= most"):
        StoppingRule(least=5, most=2)


def test_a_measurement_repeats_until_its_ratio_is_narrow() -> None:
    """paired() with the default rule: steady times stop at the least repeats; times whose ratio alternates
    between 5 and 20 never narrow and stop at the most."""
    from bench.campaigns.perf.timing import paired

    steady = paired(Result("s", "", "b", "c", "speedup"), StoppingRule(least=6), lambda: 1.0, lambda: 0.1)
    assert len(steady.ratios) == 6 and steady.interval == pytest.approx((10.0, 10.0))
    times = iter([0.2, 0.05] * 100)
    flipping = paired(
        Result("f", "", "b", "c", "speedup"), StoppingRule(least=6, most=12), lambda: 1.0, lambda: next(times)
    )
    assert len(flipping.ratios) == 12 and "the most allowed" in flipping.stopped


def test_flops_are_counted_inside_torch_func_and_their_products_timed() -> None:
    """vmap(grad(.)) over 16 draws of a (8 × 5) @ (5 × 3) product: 16 forward and 16 backward products of
    2·8·5·3 FLOPs each (the gradient with respect to the weight only), seen as batched products."""
    weight, inputs = torch.randn(5, 3), torch.randn(16, 8, 5)
    draws = vmap(grad(lambda w, x: (x @ w).square().sum()), in_dims=(None, 0))
    counted = count(lambda: draws(weight, inputs))
    assert counted.flops == 2 * 16 * 2 * 8 * 5 * 3
    assert counted.product_flops == counted.flops and sum(counted.products.values()) == 2
    fields = limit_fields(counted, seconds=1e-3, min_run_time=0.01)
    assert fields["matmul_s"] > 0 and fields["matmul_fraction"] == pytest.approx(
        counted.flops / 1e-3 / (fields["matmul_gflops"] * 1e9)
    )
    elementwise = count(lambda: vmap(grad(lambda x: x.sin().sum()))(inputs))
    assert elementwise.flops == 0 and limit_fields(elementwise, 1e-3)["matmul_fraction"] is None


def test_quick_run_writes_every_requested_measurement(tmp_path, monkeypatch, capsys) -> None:
    def broken(*arguments, **keywords):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cli, "measure_lazy_adam", broken)  # the name the command line calls
    output, table = tmp_path / "perf.json", tmp_path / "perf.md"
    code = main(
        [
            "--quick",
            "--only",
            "probe_toy,harness,lazy_adam",
            "--output",
            str(output),
            "--markdown",
            str(table),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 1, printed  # the broken measurement
    report = json.loads(output.read_text())
    assert report["machine"]["cores_available"] >= 1 and report["quick"] is True
    assert report["stopping_rule"]["least"] == report["stopping_rule"]["most"] == 2
    by_name = {measurement["name"]: measurement for measurement in report["measurements"]}
    assert set(by_name) == {
        "probe_toy",
        "probe_toy_whole",
        "harness_step",
        "harness_loop",
        "lazy_adam",
    }
    for name in ("probe_toy", "harness_step", "harness_loop"):
        measured = by_name[name]
        assert measured["status"] == "ok" and len(measured["ratios"]) == measured["repeats"] == 2
        low, high = measured["ratio_interval"]
        assert low <= measured["ratio_median"] <= high
        assert measured["verdict"] in ("met", "missed", "undecided") and "as asked" in measured["stopped"]
    assert by_name["probe_toy"]["arithmetic"]["flops"] == 0  # the toy's draws are elementwise
    assert by_name["lazy_adam"]["status"] == "error" and by_name["lazy_adam"]["ratio_median"] is None
    assert "RuntimeError: out of memory" in by_name["lazy_adam"]["note"]
    assert "machine:" in printed and "load average" in printed and "error" in printed
    written = table.read_text()
    assert "| measurement | baseline → candidate |" in written and "| harness_step |" in written
    assert "load average" in written


def test_bad_stopping_rule_is_refused_with_exit_code_2(capsys) -> None:
    assert main(["--min-repeats", "9", "--max-repeats", "3", "--only", "probe_toy"]) == 2
    assert "least <= most" in capsys.readouterr().err


def test_lazy_adam_measurement_runs_at_quick_size() -> None:
    results = measure_lazy_adam(StoppingRule.fixed(2), rows=2_000, dim=8, touched_fraction=0.01, steps=2)
    assert [result.name for result in results] == [
        "lazy_adam_vs_adam",
        "lazy_adam_vs_sparse_adam",
        "lazy_adam_dense_gradient",
    ]
    assert all(result.status == "ok" and result.ratio > 0 and len(result.ratios) == 2 for result in results)
    assert results[0].baseline_s == results[2].baseline_s  # dense Adam's times serve two rows


def test_unknown_measurement_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "probe_toy,warp_drive"])
    assert exit_info.value.code == 2


def test_bare_loop_computes_the_harness_losses(config_factory, tmp_path) -> None:
    """From the same seed, the bare loop's losses are the harness's: same data order, same initialization,
    same Gumbel noise from the global generator (the harness's probe at step 0 does not consume it), same
    likelihood, KL and Adam step."""
    steps = 3
    config = config_factory(
        "task=vae",
        "estimator=gumbel",
        "optimizer=adam",
        "seed=3",
        f"steps={steps}",
        "log_every=1",
        "probe.every=1",
        "probe.draws=2",
    )
    task, estimator, optimizer = seeded_setup(config)
    recorder = Recorder(tmp_path)
    train(config, task, estimator, optimizer, recorder)
    harness = [value for _, metric, value in recorder.rows if metric == "train_loss"]

    task, estimator, _ = seeded_setup(config)
    bare = bare_vae_steps(
        task, tau=estimator.tau, samples=config.samples, lr=config.optimizer.lr, steps=steps, seed=config.seed
    )
    assert len(harness) == len(bare.losses) == steps
    assert bare.losses[0] == pytest.approx(harness[0], rel=1e-6)
    assert bare.losses == pytest.approx(harness, rel=1e-6)
    assert len(bare.step_times) == len(bare.optimizer_times) == steps and bare.total > 0


def test_bare_loop_differs_with_the_seed(config_factory) -> None:
    """A negative control: the equality above is not that of any two VAE runs."""
    losses = []
    for seed in (3, 4):
        config = config_factory("task=vae", "estimator=gumbel", f"seed={seed}")
        task, estimator, _ = seeded_setup(config)
        run = bare_vae_steps(task, tau=estimator.tau, samples=1, lr=0.01, steps=1, seed=seed)
        losses.append(run.losses[0])
    assert losses[0] != pytest.approx(losses[1], rel=1e-6)
    assert torch.isfinite(torch.tensor(losses)).all()


def test_fast_finite_gradient_check_keeps_its_meaning() -> None:
    """bench.run.loop.finite_gradients adds up one sum per gradient first; the answer must not change."""
    from bench.run.loop import finite_gradients

    parameters = [torch.nn.Parameter(torch.zeros(3, 4)) for _ in range(3)]
    for parameter in parameters:
        parameter.grad = torch.ones_like(parameter)
    assert finite_gradients(parameters)
    for bad in (float("nan"), float("inf"), -float("inf")):
        parameters[1].grad[0, 1] = bad
        assert not finite_gradients(parameters), bad
    parameters[1].grad[0, 1] = 3e38  # finite, but the norm overflows: confirmed entry by entry
    parameters[1].grad[0, 2] = 3e38
    assert finite_gradients(parameters)
    parameters[1].grad[0, 1:3] = torch.tensor([float("inf"), -float("inf")])  # a sum that is nan, not inf
    assert not finite_gradients(parameters)
    assert finite_gradients([torch.nn.Parameter(torch.zeros(2))])  # no gradient at all
