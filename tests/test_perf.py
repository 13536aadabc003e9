"""``python -m bench.perf`` runs, reports every measurement it was asked for, and never invents one.

No timing is asserted here (speed is measured by ``python -m bench.perf`` itself): only that the ratios
are computed from the recorded times, that goals are judged in the right direction, and that a piece that
is missing is reported as "not available yet".
"""

from __future__ import annotations

import json

import pytest
import torch

import bench.perf as perf
from bench.perf import NOT_AVAILABLE, NotAvailable, Result

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
    missing = Result("c", "", "x", "y", "ratio", goal=1.0, status=NOT_AVAILABLE)
    assert missing.ratio is None and missing.goal_met is None


def test_quick_run_writes_every_requested_measurement(tmp_path, monkeypatch, capsys) -> None:
    def not_landed(*arguments, **keywords):
        raise NotAvailable("No module named 'optim.lazy'")

    monkeypatch.setattr(perf, "measure_lazy_adam", not_landed)
    output = tmp_path / "perf.json"
    code = perf.main(["--quick", "--only", "probe_toy,lazy_adam,lookahead", "--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(output.read_text())
    assert report["machine"]["cores_available"] >= 1 and report["quick"] is True
    by_name = {measurement["name"]: measurement for measurement in report["measurements"]}
    assert set(by_name) == {
        "probe_toy",
        "probe_toy_whole",
        "lazy_adam_vs_adam",
        "lookahead_step",
        "lookahead_optimizer",
    }
    for name in ("probe_toy", "lookahead_step"):
        measured = by_name[name]
        assert measured["status"] == "ok" and len(measured["ratios"]) == report["repeats"] == 2
        assert measured["ratio_median"] > 0 and measured["goal_met"] in (True, False)
    assert by_name["lazy_adam_vs_adam"]["status"] == NOT_AVAILABLE
    assert by_name["lazy_adam_vs_adam"]["ratio_median"] is None
    assert "not available yet" in printed and "machine:" in printed and "load average" in printed


def test_unknown_measurement_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        perf.main(["--only", "probe_toy,warp_drive"])
    assert exit_info.value.code == 2


def test_fast_finite_gradient_check_keeps_its_meaning() -> None:
    """bench.runner.finite_gradients checks fused norms first (a perf fix); the answer must not change."""
    from bench.runner import finite_gradients

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
    assert finite_gradients([torch.nn.Parameter(torch.zeros(2))])  # no gradient at all
