"""The tuning protocol (``bench.campaigns.tuning``) finds a known best step size, and refuses bad settings
clearly.

The yardstick: full-batch gradient descent on f(θ) = ½ Σ λ_i θ_i² (``task=quadratic``, ``optimizer=sgd``,
momentum 0) for T = 100 steps from θ = 1. After T steps at a fixed step size η

    f(θ_T) = ½ Σ_i λ_i (1 − ηλ_i)^{2T},

whose minimiser η* the test finds itself by a one-dimensional minimisation (scipy's bounded Brent on log f):
1.937 here, not the many-step limit 2/(λ_min + λ_max) = 1.980. Stage 1 of the protocol on a log grid must
choose a grid point within one grid step of η* (|log η_chosen − log η*| ≤ log of the grid's ratio), and its
score must be the closed form at that point (relative tolerance 1e-3: the runs compute in float32).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from bench.campaigns import tuning
from bench.cli import tune

STEPS = 100
EIGENVALUES = dict(dim=10, smallest=0.01, largest=1.0, start=1.0)
GRID = [float(f"{value:.6g}") for value in np.geomspace(0.7, 2.3, 8)]  # ratio 1.185 between neighbours


def loss_after(eta: float, steps: int = STEPS) -> float:
    """The closed form of f(θ_T) for gradient descent at step size ``eta``."""
    lam = np.logspace(
        math.log10(EIGENVALUES["smallest"]), math.log10(EIGENVALUES["largest"]), EIGENVALUES["dim"]
    )
    return float(0.5 * np.sum(lam * (1 - eta * lam) ** (2 * steps)) * EIGENVALUES["start"] ** 2)


def best_step_size() -> float:
    found = minimize_scalar(
        lambda eta: math.log(loss_after(eta)), bounds=(0.1, 2.0), method="bounded", options={"xatol": 1e-9}
    )
    assert found.success
    return float(found.x)


def spec(optimizers: str, seeds: str = "[0]", final: str = "[1,2,3,4,5]") -> str:
    return f"+tuning={{seeds:{seeds},final_seeds:{final},metric:objective,optimizers:{optimizers}}}"


def base(root) -> list[str]:
    return [
        "task=quadratic",
        *(f"task.{key}={value}" for key, value in EIGENVALUES.items()),
        f"steps={STEPS}",
        "log_every=50",
        "probe.draws=2",
        "progress=false",
        "threads=1",
        f"hydra.sweep.dir={root}",
    ]


def test_protocol_finds_the_best_step_size_of_gradient_descent(tmp_path, capsys):
    eta = best_step_size()
    assert abs(eta - 2 / (EIGENVALUES["smallest"] + EIGENVALUES["largest"])) > 0.02  # finite T matters
    grid = "[" + ",".join(map(str, GRID)) + "]"
    code = tune.main([*base(tmp_path), spec(f"{{sgd:{{lr:{grid},momentum:0.0}}}}"), "--stage", "1"])
    assert code == 0, capsys.readouterr().err
    document = json.loads((tmp_path / tuning.TUNING_FILE).read_text())
    [choice] = document["choices"]
    assert choice["grid"] == {"optimizer.lr": GRID}
    assert "lowest mean" in document["rule"] and len(choice["scores"]) == len(GRID)
    chosen = choice["chosen"]["optimizer.lr"]
    ratio = GRID[1] / GRID[0]
    assert abs(math.log(chosen / eta)) <= math.log(ratio) * (1 + 1e-9), (chosen, eta)
    assert choice["score"] == pytest.approx(loss_after(chosen), rel=1e-3)
    for score in choice["scores"]:  # every grid point was run and read back: the closed form, or +inf
        [value] = score["values"]
        expected = loss_after(score["setting"]["optimizer.lr"])
        assert value is None or value == pytest.approx(expected, rel=1e-3)
    # Stage 2's sweep reruns the chosen step size with the five fresh seeds (dry run: commands only).
    assert tune.main([*base(tmp_path), spec(f"{{sgd:{{lr:{grid},momentum:0.0}}}}"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"optimizer.lr={chosen!r}" in printed and "seed=1,2,3,4,5" in printed


@pytest.mark.parametrize(
    ("tuning", "expected"),
    [
        (spec("{sgd:{lr:[0.1]}}", final="[0,1,2,3,4]"), "must not repeat the stage-1 seeds"),
        (spec("{sgd:{lr:[0.1]}}", final="[1,2]"), "at least 5 distinct"),
        (spec("{nadam:{lr:[0.1]}}"), "unknown optimizer 'nadam'"),
        (spec("{sgd:{lr:[]}}"), "is empty"),
    ],
)
def test_bad_settings_exit_2_with_one_paragraph(tmp_path, capsys, tuning, expected):
    assert tune.main([*base(tmp_path), tuning, "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert expected in error and error.startswith("error: ") and error.strip().count("\n") == 0
