"""Unbiased estimators agree with the analytic gradient; straight-through estimators are measurably biased.

Each check draws M independent estimates at fixed parameters (the probe's own routine), and compares the
mean with the analytic gradient coordinate by coordinate in units of the standard error of the mean. An
unbiased estimator must stay within 4.5 SE on every coordinate (4 SE plus a small allowance for testing
several coordinates at once; fixed seeds make the outcome deterministic). A biased one must be off by more
than 10 SE.
"""

import math

import pytest
import torch

from bench.run.probe import draw_gradients, flatten, gradient_statistics
from bench.tasks.gaussian import GaussianTask
from bench.tasks.toy import Toy
from estimators import Exact, Gumbel, GumbelST, Reparam, ScoreFunction, StraightThrough

UNBIASED_SE = 4.5
BIASED_SE = 10.0


def toy_task(p_one: list[float], classes: int = 2) -> Toy:
    task = Toy(dim=len(p_one), classes=classes)
    with torch.no_grad():
        task.logits.zero_()
        task.logits[:, -1] = torch.logit(torch.tensor(p_one))
    return task


def z_scores(task, estimator, samples: int, draws: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    gradients = draw_gradients(task, estimator, samples, None, draws).double()
    reference = flatten(task.reference_gradient()).double()
    standard_error = gradients.std(0) / math.sqrt(draws)
    moving = standard_error > 0  # coordinates with zero spread carry no information (e.g. a fixed logit)
    return (gradients.mean(0) - reference)[moving] / standard_error[moving]


@pytest.mark.parametrize(
    ("estimator", "samples"),
    [
        (ScoreFunction("none"), 1),
        (ScoreFunction("ema"), 1),
        (ScoreFunction("loo"), 2),
        (ScoreFunction("loo"), 5),
    ],
    ids=["none", "ema", "loo-S2", "loo-S5"],
)
def test_score_function_is_unbiased_on_toy(estimator, samples):
    task = toy_task([0.2, 0.7, 0.5])
    if estimator.baseline == "ema":  # a warmed-up EMA baseline, frozen during the probe (eval mode)
        estimator.ema_value.fill_(0.5)
        estimator.ema_updates.fill_(10)
    scores = z_scores(task, estimator, samples, draws=4000, seed=3)
    assert scores.abs().max() < UNBIASED_SE, scores


def test_score_function_is_unbiased_with_many_classes():
    task = Toy(dim=2, classes=5, t=0.3)
    with torch.no_grad():
        task.logits.copy_(torch.tensor([[0.5, -1.0, 0.2, 1.0, 0.0], [0.0, 0.3, -0.4, 0.8, -1.2]]))
    scores = z_scores(task, ScoreFunction("loo"), 3, draws=4000, seed=4)
    assert scores.abs().max() < UNBIASED_SE, scores


@pytest.mark.parametrize("function", ["square", "cos", "exp"])
@pytest.mark.parametrize(
    "estimator", [Reparam(), ScoreFunction("none"), ScoreFunction("loo")], ids=["reparam", "score", "rloo"]
)
def test_gaussian_estimators_are_unbiased(function, estimator):
    task = GaussianTask(dim=2, f=function, k=1.5, mu0=0.7, sigma0=0.8)
    samples = 2 if estimator.min_samples == 2 else 1
    scores = z_scores(task, estimator, samples, draws=4000, seed=5)
    assert scores.abs().max() < UNBIASED_SE, scores


def test_exact_estimator_has_no_variance_and_no_bias():
    task = toy_task([0.2, 0.9], classes=2)
    torch.manual_seed(0)
    gradients = draw_gradients(task, Exact(), 1, None, 3)
    assert torch.allclose(gradients, flatten(task.reference_gradient()).expand_as(gradients), atol=1e-7)


@pytest.mark.parametrize(
    "estimator", [StraightThrough(), GumbelST(), Gumbel()], ids=["st", "gumbel_st", "gumbel"]
)
def test_straight_through_type_estimators_are_biased_on_toy(estimator):
    # At p(b=1) = 0.2 the true gradient pushes p down, (1 − 2t)·p(1 − p) > 0 on the class-1 logit, while ST
    # estimates 2(p − t)·p(1 − p) < 0: it pulls towards p = t. (At p = 0.5 the two coincide, so probe
    # elsewhere.)
    task = toy_task([0.2])
    torch.manual_seed(6)
    gradients = draw_gradients(task, estimator, 1, None, 4000)
    statistics = gradient_statistics(gradients, flatten(task.reference_gradient()))
    assert statistics["grad_bias"] > BIASED_SE * statistics["grad_bias_se"], statistics
    if not isinstance(estimator, Gumbel):
        assert statistics["grad_cos"] < 0, "straight-through points the wrong way at p = 0.2 < t"
