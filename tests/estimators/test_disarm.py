"""DisARM for Bernoulli latents (``estimators.DisARM``; Dong, Mnih & Tucker 2020).

Statistical checks use a fixed seed and compare the mean of M independent estimates with the exact gradient
(enumeration of every outcome, ``estimators.Exact``) coordinate by coordinate, in units of the standard
error of that mean: an unbiased estimator must stay within 4.5 SE on every coordinate (4 SE plus a small
allowance for testing a few dozen coordinates at once).
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run.build import setup
from estimators import DisARM, EstimatorError, Exact

UNBIASED_SE = 4.5


def estimates(loss, logits: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """M independent gradient estimates (rows, float64) of the scalar ``loss(logits)`` and their values.

    Drawn in one batched computation: ``vmap`` over a dummy argument with ``randomness="different"`` gives
    every draw its own noise from the global generator (seeded by the caller).
    """
    one_draw = torch.func.grad_and_value(lambda value, _: loss(value))
    gradients, values = torch.func.vmap(one_draw, in_dims=(None, 0), randomness="different")(
        logits.detach(), torch.zeros(draws)
    )
    return gradients.reshape(draws, -1).double(), values.double()


def coupled_objective(weights: torch.Tensor):
    """f(z) = sin(Σ_l w_l b_l) + b_0·b_2 on one-hot z (S, batch, L, 2): couples the L bits of a data point."""

    def f(z: torch.Tensor) -> torch.Tensor:
        bits = z[..., 1]
        return torch.sin(bits @ weights) + bits[..., 0] * bits[..., 2]

    return f


@pytest.mark.parametrize("samples", [2, 6])
def test_unbiased_against_enumeration(samples):
    # A batch of 3 data points with L = 4 coupled bits each, probabilities p(b = 1) between 0.05 and 0.75.
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 2) * 1.5
    f = coupled_objective(torch.tensor([0.7, -1.2, 0.4, 2.0]))
    exact = torch.autograd.grad(Exact()(logits.requires_grad_(), f).sum(), logits)[0].reshape(-1).double()
    estimator = DisARM()
    torch.manual_seed(1)
    gradients, _ = estimates(lambda value: estimator(value, f, samples).sum(), logits, 20_000)
    standard_error = gradients.std(0) / math.sqrt(gradients.shape[0])
    assert (standard_error > 0).all()
    scores = (gradients.mean(0) - exact) / standard_error
    assert scores.abs().max() < UNBIASED_SE, scores
    # The two logits of a bit enter only through θ = logit₁ − logit₀: their estimates are exact opposites.
    pairs = gradients.reshape(gradients.shape[0], 3, 4, 2)
    assert torch.equal(pairs[..., 0], -pairs[..., 1])


def test_variance_of_one_bit_matches_its_closed_form():
    # One bit, p = σ(θ): ĝ_θ = ½ (f(1) − f(0)) σ(|θ|) (both signs of (−1)^b̃ give the same value) when b ≠ b̃,
    # which happens with probability q = 2 min(p, 1 − p), and 0 otherwise. So E ĝ = p(1 − p)(f(1) − f(0))
    # and Var ĝ = c² q (1 − q) with c = ½ |f(1) − f(0)| σ(|θ|); at p = 1/2 the estimate is exact (q = 1).
    # The estimate takes two values, so the SE of the measured variance from M = 20,000 draws is small and
    # reliable; the tolerance is 4 SE.
    f = lambda z: (z[..., 1] - 0.45) ** 2 + 3.0 * z[..., 1]  # f(1) − f(0) = 3.1
    estimator = DisARM()
    for theta in (-2.0, -0.3, 0.0, 1.1):
        logits = torch.tensor([0.0, theta])
        torch.manual_seed(2)
        gradients, _ = estimates(lambda value: estimator(value, f, 2), logits, 20_000)
        estimate = gradients[:, 1]  # ∂/∂θ
        p = 1 / (1 + math.exp(-theta))
        q = 2 * min(p, 1 - p)
        c = 0.5 * 3.1 / (1 + math.exp(-abs(theta)))
        expected_variance = c**2 * q * (1 - q)
        if q == 1.0:
            assert torch.allclose(estimate, torch.full_like(estimate, p * (1 - p) * 3.1))
            continue
        spread = (estimate - estimate.mean()) ** 2
        standard_error = float(spread.std()) / math.sqrt(len(spread))
        assert abs(float(estimate.var()) - expected_variance) < 4 * standard_error, (
            theta,
            float(estimate.var()),
        )
        mean_error = float(estimate.mean()) - p * (1 - p) * 3.1
        assert abs(mean_error) < 4 * float(estimate.std()) / math.sqrt(len(estimate)), (theta, mean_error)


def test_value_and_pathwise_gradient_of_other_parameters():
    # f(z) = a·b with a trainable scale a: the surrogate's value is f averaged over both members of every pair
    # (unbiased for E f = a p), and a gets the pathwise gradient b, unbiased for ∂/∂a E[a b] = p.
    theta, scale = 0.8, 1.7
    p = 1 / (1 + math.exp(-theta))
    estimator = DisARM()

    def loss(values: torch.Tensor) -> torch.Tensor:
        logits, a = values[:2], values[2]
        return estimator(logits.reshape(1, 2), lambda z: a * z[..., 0, 1], 4)

    torch.manual_seed(3)
    gradients, values = estimates(loss, torch.tensor([0.0, theta, scale]), 20_000)
    reference = torch.tensor([-p * (1 - p) * scale, p * (1 - p) * scale, p], dtype=torch.float64)
    scores = (gradients.mean(0) - reference) / (gradients.std(0) / math.sqrt(len(gradients)))
    assert scores.abs().max() < UNBIASED_SE, scores
    value_score = (values.mean() - scale * p) / (values.std() / math.sqrt(len(values)))
    assert abs(value_score) < UNBIASED_SE, value_score


def test_refuses_more_than_two_classes_and_odd_sample_counts():
    with pytest.raises(
        EstimatorError, match=r"two-class logits of shape \(\.\.\., 2\); got logits of shape \(4, 3\)"
    ):
        DisARM()(torch.zeros(4, 3), lambda z: z.sum((-1, -2)), 2)
    with pytest.raises(EstimatorError, match="must be even, got samples=3"):
        DisARM()(torch.zeros(4, 2), lambda z: z.sum((-1, -2)), 3)
    with pytest.raises(EstimatorError, match="at least 2 samples"):
        DisARM().check_samples(1)


def test_harness_defaults_to_one_pair_and_refuses_bad_settings(config_factory):
    _, estimator, _ = setup(config := config_factory("task=toy", "estimator=disarm"))
    assert isinstance(estimator, DisARM) and config.samples == 2  # samples: null → the estimator's minimum
    with pytest.raises(ConfigError, match="must be even"):
        setup(config_factory("task=toy", "estimator=disarm", "samples=3"))
    with pytest.raises(ConfigError, match="does not fit"):
        setup(config_factory("task=gaussian", "estimator=disarm"))


def test_three_classes_in_a_run_is_a_config_error(tmp_path, config_factory):
    # The class count is known only from the task's logits, at the first estimate: the run stops there with
    # the estimator's message, recorded as failed, and the command line exits 2 (ConfigError).
    from bench.run.runner import run

    config = config_factory("task=toy", "task.classes=3", "estimator=disarm", "steps=5")
    with pytest.raises(ConfigError, match="two-class logits"):
        run(config, tmp_path)
    assert '"status": "failed"' in (tmp_path / "summary.json").read_text()
