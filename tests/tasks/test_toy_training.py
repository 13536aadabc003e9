"""Training on `toy` (t = 0.45) reproduces the known result (Tucker et al. 2017; Liu et al. 2023).

The exact objective Σ_b p(b)(b − t)² is minimized at p(b = 1) → 0, and unbiased gradients get there. The
straight-through family follows E[ĝ] ∝ 2(p − t)·p(1 − p), whose zero is p = t: it settles near p ≈ 0.45.
Adam, lr = 0.02, 2000 steps, 3 seeds. Because ST estimates are noisy, p is averaged over the second half
of training (every 50 steps) before comparing with 0.3; unbiased runs must end below 0.05.
"""

import pandas as pd
import pytest

from bench.run.runner import run

SETTINGS = [
    "task=toy",
    "steps=2000",
    "optimizer=adam",
    "optimizer.lr=0.02",
    "probe.every=50",
    "probe.draws=2",
]


def probability_of_one(config_factory, tmp_path, estimator: str, seed: int) -> pd.Series:
    directory = tmp_path / f"{estimator}_{seed}"
    summary = run(config_factory(*SETTINGS, f"estimator={estimator}", f"seed={seed}"), directory)
    assert summary["status"] == "ok", summary["error"]
    metrics = pd.read_csv(directory / "metrics.csv")
    return metrics[metrics["metric"] == "prob_one"].set_index("step")["value"]


@pytest.mark.parametrize("estimator", ["exact", "rloo"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_estimators_drive_p_to_zero(config_factory, tmp_path, estimator, seed):
    p = probability_of_one(config_factory, tmp_path, estimator, seed)
    assert p.iloc[-1] < 0.05, p.tail()


@pytest.mark.parametrize("estimator", ["st", "gumbel_st"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_straight_through_settles_near_t(config_factory, tmp_path, estimator, seed):
    p = probability_of_one(config_factory, tmp_path, estimator, seed)
    second_half = p[p.index >= 1000]
    assert second_half.mean() > 0.3, second_half.describe()
    assert abs(second_half.mean() - 0.45) < 0.1, second_half.describe()
