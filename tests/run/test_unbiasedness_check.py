"""The unbiasedness check for a task without a reference (``bench.run.probe.reference.unbiasedness_check`` and
``python -m bench.check unbiasedness``): the running difference against a second, unbiased estimator and its
z-score, which grows like √n for a biased estimator and stays within ±4 for an unbiased one.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bench.cli.unbiasedness import main
from bench.run.probe import gradient_statistics, unbiasedness_check
from bench.run.probe.reference import difference_statistics
from bench.tasks.toy import Toy
from estimators import GumbelST, ScoreFunction, StraightThrough

PAIRS, CHECKPOINTS = 1600, 8


def toy() -> Toy:
    """Three Bernoulli variables with p(b = 1) = σ(−1), σ(0.3), σ(1.2)."""
    task = Toy(dim=3)
    with torch.no_grad():
        task.logits[:, 1] = torch.tensor([-1.0, 0.3, 1.2])
    return task


@pytest.mark.parametrize(("name", "estimator"), [("st", StraightThrough), ("gumbel_st", GumbelST)])
def test_the_z_score_of_a_biased_estimator_grows(name, estimator, one_thread):
    torch.manual_seed(0)
    check = unbiasedness_check(toy(), estimator(), 1, PAIRS, CHECKPOINTS)
    assert (check.against, check.against_samples) == ("leg", 1)
    points = check.points
    z = [point.z for point in points]
    assert [point.pairs for point in points] == [PAIRS * (k + 1) // CHECKPOINTS for k in range(CHECKPOINTS)]
    assert z[0] > 4 and z[-1] > 4, z
    # like √n: 8 times the pairs, about √8 ≈ 2.8 times the z-score
    assert 2 < z[-1] / z[0] < 4, z
    assert points[-1].bias_sq > 4 * points[-1].noise ** 2


@pytest.mark.parametrize("against", ["chosen", "rloo16"])
def test_the_z_score_of_an_unbiased_estimator_stays_within_4(against, one_thread):
    # Against the estimator a Monte-Carlo reference would choose (local expectation gradients, exact here:
    # the toy's f is separable), and against RLOO with S = 16.
    torch.manual_seed(1)
    second = {"chosen": None, "rloo16": ScoreFunction(baseline="loo")}[against]
    check = unbiasedness_check(toy(), ScoreFunction(baseline="loo"), 2, PAIRS, CHECKPOINTS, second, 16)
    points = check.points
    assert all(abs(point.z) <= 4 for point in points), [point.z for point in points]


def test_the_test_is_the_probes_test_of_zero_bias():
    generator = torch.Generator().manual_seed(2)
    differences = 0.05 + torch.randn(300, 6, generator=generator)
    point = difference_statistics(differences)
    expected = gradient_statistics(differences, torch.zeros(6))
    assert point.p_value == pytest.approx(expected["grad_bias_p"], rel=1e-6)
    assert point.bias_sq == pytest.approx(expected["grad_bias_sq"], rel=1e-9)
    assert point.noise == pytest.approx(expected["grad_bias_se"], rel=1e-9)
    # z = Φ⁻¹(1 − p), and it keeps growing where p underflows to 0
    assert point.z == pytest.approx(stats.norm.isf(point.p_value), rel=1e-6)
    huge = [difference_statistics(shift + torch.randn(300, 6, generator=generator)).z for shift in (3, 30)]
    assert all(math.isfinite(value) for value in huge) and 40 < huge[0] < huge[1], huge


def test_the_command(capsys, one_thread):
    # Three classes (values 0, ½, 1) at the uniform distribution: straight-through is biased there.
    overrides = ["task=toy", "task.dim=3", "task.classes=3", "--pairs", "400", "--checkpoints", "4"]
    assert main([*overrides, "estimator=st"]) == 1
    output = capsys.readouterr().out
    assert "evidence of bias (z > 4)" in output and len(output.splitlines()) == 7
    assert main([*overrides, "estimator=rloo", "samples=2"]) == 0
    assert "no evidence of bias" in capsys.readouterr().out
    assert main(["task=toy", "estimator=nonexistent"]) == 2
