"""ReinMax against the formula of Liu et al. 2023 (Algorithm 2) and its second-order accuracy.

backward: 2·(diag π₁ − π₁π₁ᵀ)·g − ½·(diag π₀ − π₀π₀ᵀ)·g,  π₀ = softmax(θ), π₁ = (softmax(θ/τ) + D)/2
"""

import math

import pytest
import torch

from estimators import EstimatorError, ReinMax
from estimators.base import sample_categorical
from estimators.reinmax import reinmax_sample


def softmax_jacobian(probs: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(probs) - probs.unsqueeze(-1) * probs.unsqueeze(-2)


def reinmax_gradient(logits: torch.Tensor, hard: torch.Tensor, f, tau: float) -> torch.Tensor:
    """∇_θ f(z) through ``reinmax_sample`` for a given one-hot sample ``hard`` of shape (1, *logits.shape)."""
    logits = logits.clone().requires_grad_(True)
    return torch.autograd.grad(f(reinmax_sample(logits, hard, tau)).sum(), logits)[0]


def test_hand_computed_two_class_case():
    # θ = (0, log 3): π₀ = (1/4, 3/4); τ = 1; f(z) = z₀, so g = (1, 0).
    # D = e₀: π₁ = ((1/4, 3/4) + (1, 0))/2 = (5/8, 3/8); for two classes (diag p − ppᵀ)g = p₀p₁·(1, −1), so
    #   ∇ = 2·(5/8)(3/8)·(1, −1) − ½·(1/4)(3/4)·(1, −1) = (15/32 − 3/32)·(1, −1) = 0.375·(1, −1).
    # D = e₁: π₁ = (1/8, 7/8); ∇ = (2·7/64 − 3/32)·(1, −1) = 0.125·(1, −1).
    # Mean over D: ¼·0.375 + ¾·0.125 = 0.1875 = π₀₀π₀₁, the exact gradient of E[z₀] = π₀₀.
    logits = torch.tensor([0.0, math.log(3.0)])

    def first(z):
        return z[..., 0]

    for hard, expected in [([1.0, 0.0], 0.375), ([0.0, 1.0], 0.125)]:
        gradient = reinmax_gradient(logits, torch.tensor([hard]), first, tau=1.0)
        torch.testing.assert_close(gradient, torch.tensor([expected, -expected]))


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_backward_is_the_paper_formula(tau):
    torch.manual_seed(0)
    logits = torch.randn(3, 5)
    hard = sample_categorical(logits, 1)
    weights, matrix = torch.randn(5), torch.randn(5, 5)

    def f(z):  # nonlinear in z, so g = ∂f/∂z depends on the sample
        return (z @ matrix * z).sum(-1) + z @ weights

    z = hard.clone().requires_grad_(True)
    upstream = torch.autograd.grad(f(z).sum(), z)[0][0]  # g, evaluated at D
    probs = logits.softmax(-1)
    shifted = ((logits / tau).softmax(-1) + hard[0]) / 2
    expected = (2 * softmax_jacobian(shifted) - 0.5 * softmax_jacobian(probs)) @ upstream.unsqueeze(-1)
    torch.testing.assert_close(reinmax_gradient(logits, hard, f, tau), expected.squeeze(-1))


def expected_over_samples(logits, f, gradient_of) -> torch.Tensor:
    """E_D[gradient_of(D)], enumerating the C outcomes D of one categorical variable."""
    probs = logits.softmax(-1)
    eye = torch.eye(len(logits))
    return sum(probs[k] * gradient_of(eye[k : k + 1]) for k in range(len(logits)))


def test_second_order_accuracy_makes_the_mean_exact_for_quadratic_f():
    # Liu et al. 2023, §4: ReinMax is Heun's method, exact for a quadratic f at τ = 1; straight-through
    # (forward Euler) is exact only for linear f. The expectation over D is computed by enumeration.
    torch.manual_seed(1)
    logits = torch.randn(4)
    matrix, weights = torch.randn(4, 4), torch.randn(4)

    def f(z):
        return (z @ matrix * z).sum(-1) + z @ weights

    outcomes = torch.eye(4)
    exact = torch.autograd.grad((logits.requires_grad_(True).softmax(-1) * f(outcomes)).sum(), logits)[0]
    logits = logits.detach()
    reinmax_mean = expected_over_samples(logits, f, lambda hard: reinmax_gradient(logits, hard, f, 1.0))
    torch.testing.assert_close(reinmax_mean, exact, rtol=1e-5, atol=1e-6)

    def st_gradient(hard):
        leaf = logits.clone().requires_grad_(True)
        soft = leaf.softmax(-1)
        return torch.autograd.grad(f(hard + soft - soft.detach()).sum(), leaf)[0]

    st_mean = expected_over_samples(logits, f, st_gradient)
    assert (st_mean - exact).norm() > 0.1 * exact.norm(), "straight-through should be biased for quadratic f"


def test_forward_is_a_categorical_sample():
    torch.manual_seed(2)
    logits = torch.tensor([0.5, -1.0, 1.5])
    draws = 20000
    values = ReinMax()(logits.expand(draws, 3), lambda z: z)  # f = identity: the surrogate's value is D
    assert set(values.unique().tolist()) == {0.0, 1.0}
    frequency, probs = values.mean(0), logits.softmax(-1)
    standard_error = (probs * (1 - probs) / draws).sqrt()
    assert ((frequency - probs).abs() < 4 * standard_error).all(), (frequency, probs)  # 4 SE per class


def test_runs_under_vmap():
    # The probes vectorize estimates with torch.func.vmap(randomness="different"): with logits so peaked that
    # D is the first class in every draw, each vmapped gradient must equal the formula.
    logits = torch.tensor([[12.0, 0.0, 0.0], [0.0, 12.0, -1.0]])
    weights = torch.tensor([1.0, -2.0, 0.5])

    estimator = ReinMax(tau=1.5)

    def gradient(_):
        return torch.func.grad(lambda theta: estimator(theta, lambda z: (z @ weights).sum(-1)).sum())(logits)

    gradients = torch.func.vmap(gradient, randomness="different")(torch.zeros(8))
    hard = torch.eye(3)[[0, 1]]
    probs = logits.softmax(-1)
    shifted = ((logits / 1.5).softmax(-1) + hard) / 2
    expected = (2 * softmax_jacobian(shifted) - 0.5 * softmax_jacobian(probs)) @ weights
    torch.testing.assert_close(gradients, expected.expand(8, 2, 3))


def test_reinmax_is_not_straight_through():
    # For linear f, straight-through's backward (τ = 1) is (diag π₀ − π₀π₀ᵀ)·w whatever D is; ReinMax's
    # depends on D. Guards against ReinMax silently degrading to ST.
    logits = torch.tensor([0.3, -0.2, 0.9])
    weights = torch.tensor([1.0, 2.0, -1.0])
    straight = softmax_jacobian(logits.softmax(-1)) @ weights
    reinmax = reinmax_gradient(logits, torch.tensor([[0.0, 1.0, 0.0]]), lambda z: z @ weights, 1.0)
    assert (reinmax - straight).abs().max() > 0.05


@pytest.mark.parametrize("settings", [{"tau": 0.5}, {"tau": 2.0, "tau_min": 0.5, "anneal_rate": 1e-3}])
def test_temperature_below_one_is_refused(settings):
    with pytest.raises(EstimatorError, match="temperature >= 1"):
        ReinMax(**settings)
