"""``python -m bench.perf`` runs, reports every measurement it was asked for, and its bare-loop baseline
computes what the harness computes.

No timing is asserted here (speed is measured by ``python -m bench.perf`` itself): only that the ratios are
computed from the recorded times, that goals are judged in the right direction, that a failing measurement
is reported as an error without hiding the others, and that the bare loop's losses are the harness's.
"""

from __future__ import annotations

import json

import pytest
import torch

import bench.cli.perf as cli
from bench.campaigns.perf import Result
from bench.campaigns.perf.bare import bare_vae_steps, seeded_setup
from bench.campaigns.perf.measurements import measure_lazy_adam
from bench.cli.perf import main
from bench.run.loop import Recorder, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_ratios_and_goals_follow_their_direction() -> None:
    speedup = Result("a", "", "loop", "vectorized", "speedup", goal=10.0, baseline_s=[1.0, 2.0, 3.0])
    speedup.candidate_s = [0.1, 0.1, 0.5]
    assert speedup.ratios == pytest.approx([10.0, 20.0, 6.0])
    assert speedup.ratio == pytest.approx(10.0) and speedup.goal_met is True
    slower = Result(
        "b", "", "bare", "harness", "ratio", goal=1.10, baseline_s=[1.0, 1.0], candidate_s=[1.2, 1.3]
    )
    assert slower.ratio == pytest.approx(1.25) and slower.goal_met is False
    record = slower.record()
    assert record["goal"] == "≤ 1.1×" and record["ratio_min"] == pytest.approx(1.2)
    failed = Result("c", "", "x", "y", "ratio", goal=1.0, status="error")
    assert failed.ratio is None and failed.goal_met is None


def test_quick_run_writes_every_requested_measurement(tmp_path, monkeypatch, capsys) -> None:
    def broken(*arguments, **keywords):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cli, "measure_lazy_adam", broken)  # the name the command line calls
    output = tmp_path / "perf.json"
    code = main(["--quick", "--only", "probe_toy,harness,lazy_adam,lookahead", "--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 1, printed  # the broken measurement
    report = json.loads(output.read_text())
    assert report["machine"]["cores_available"] >= 1 and report["quick"] is True
    by_name = {measurement["name"]: measurement for measurement in report["measurements"]}
    assert set(by_name) == {
        "probe_toy",
        "probe_toy_whole",
        "harness_step",
        "harness_loop",
        "lazy_adam",
        "lookahead_step",
        "lookahead_optimizer",
    }
    for name in ("probe_toy", "harness_step", "harness_loop", "lookahead_step"):
        measured = by_name[name]
        assert measured["status"] == "ok" and len(measured["ratios"]) == report["repeats"] == 2
        assert measured["ratio_median"] > 0 and measured["goal_met"] in (True, False)
    assert by_name["lazy_adam"]["status"] == "error" and by_name["lazy_adam"]["ratio_median"] is None
    assert "RuntimeError: out of memory" in by_name["lazy_adam"]["note"]
    assert "machine:" in printed and "load average" in printed and "error" in printed


def test_lazy_adam_measurement_runs_at_quick_size() -> None:
    results = measure_lazy_adam(1, rows=2_000, dim=8, touched_fraction=0.01, steps=2)
    assert [result.name for result in results] == [
        "lazy_adam_vs_adam",
        "lazy_adam_vs_sparse_adam",
        "lazy_adam_dense_gradient",
    ]
    assert all(result.status == "ok" and result.ratio > 0 for result in results)


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
