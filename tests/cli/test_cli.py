"""The command line as a user meets it: one run, a sweep that goes on past bad runs, and clear errors."""

import json
import math

import pandas as pd

from tests.helpers import run_cli

REQUIRED = {
    "task",
    "estimator",
    "optimizer",
    "seed",
    "status",
    "steps",
    "wall_time_s",
    "step_time_ms",
    "final_loss",
    "reference",
    "error",
    "grad_variance",
    "grad_bias",
    "grad_bias_se",
    "grad_bias_sq",
    "grad_mse",
    "grad_cos",
    "grad_snr",
    "estimate_time_ms",
    "torch_version",
    "git_commit",
}


def test_single_run_writes_the_results_contract(tmp_path):
    result = run_cli(
        "bench",
        "task=toy",
        "estimator=rloo",
        "samples=4",
        "steps=60",
        "probe.every=20",
        "probe.draws=16",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 0, result.stderr
    assert "toy / rloo / adam" in result.stdout and "status=ok" in result.stdout
    assert "toy/rloo" in result.stderr and "60/60" in result.stderr  # the progress bar
    run = tmp_path / "run"
    text = (run / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    summary = json.loads(text)
    assert REQUIRED <= summary.keys()
    assert summary["status"] == "ok" and summary["steps"] == 60 and summary["samples"] == 4
    assert summary["reference"] == "analytic" and summary["error"] is None
    assert 0.2 < summary["final_loss"] < 0.26  # between the optimum t² = 0.2025 and the start 0.2525
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == ["step", "metric", "value"]
    assert set(metrics[metrics.metric == "grad_variance"].step) == {0, 20, 40, 60}
    assert (run / ".hydra" / "config.yaml").exists()
    final = metrics[(metrics.step == 60) & (metrics.metric == "grad_variance")].value.item()
    assert math.isclose(final, summary["grad_variance"], rel_tol=1e-9)


def test_estimator_that_does_not_fit_the_task_exits_2_naming_those_that_do(tmp_path):
    result = run_cli("bench", "task=gaussian", "estimator=gumbel", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert "does not fit task 'gaussian'" in message
    fitting, tasks = message.split("Estimators that fit gaussian:")[1].split("Tasks that gumbel fits:")
    for name in ("reparam", "score_function", "rloo"):
        assert name in fitting
    assert "gumbel" not in fitting
    assert "toy" in tasks and "vae" in tasks and "gaussian" not in tasks  # the tasks gumbel does fit


def test_bad_values_exit_2_with_a_message(tmp_path):
    cases = {
        ("estimator=gumbel", "estimator.tau=0"): "tau must be a finite number > 0",
        ("estimator=gumbel_st", "estimator.tau=-1"): "tau must be a finite number > 0",
        ("estimator=rloo", "samples=1"): "needs at least 2 samples",
    }
    for index, (overrides, expected) in enumerate(cases.items()):
        result = run_cli("bench", "task=toy", *overrides, f"hydra.run.dir={tmp_path}/{index}")
        assert result.returncode == 2, (overrides, result.stderr)
        assert expected in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr


def test_sweep_goes_on_past_failed_and_skipped_runs(tmp_path):
    result = run_cli(
        "bench",
        "-m",
        "task=toy,gaussian",
        "estimator=rloo,gumbel",
        "samples=1",
        "steps=20",
        "probe.draws=4",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert result.returncode == 0, result.stderr
    statuses = {}
    for path in (tmp_path / "sweep").rglob("summary.json"):
        summary = json.loads(path.read_text())
        statuses[(summary["task"], summary["estimator"])] = summary["status"]
        assert summary["status"] == "ok" or summary["error"]
    assert statuses == {
        ("toy", "rloo"): "failed",  # samples=1 is too few for the leave-one-out baseline
        ("toy", "gumbel"): "ok",
        ("gaussian", "rloo"): "failed",
        ("gaussian", "gumbel"): "skipped",  # gumbel does not fit a Gaussian latent
    }
