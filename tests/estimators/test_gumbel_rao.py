"""Gumbel-Rao (Paulus et al. 2021): conditional Gumbels, averaged ST-GS backward, same mean, less variance.

Statistical checks use fixed seeds and tolerances in standard errors (SE), stated at each assertion.
"""

import math

import pytest
import torch

from bench.tasks.vae import VAE
from estimators import EstimatorError, GumbelRao, GumbelST
from estimators.base import gumbel_noise, sample_categorical
from estimators.gumbel_rao import conditional_gumbel, gumbel_rao_sample

EULER_GAMMA = 0.5772156649015329


def test_conditional_gumbels_have_the_sampled_argmax():
    torch.manual_seed(0)
    logits = torch.tensor([[0.5, -0.3, 1.0, -2.0], [3.0, 0.0, 0.0, 0.0]])
    hard = sample_categorical(logits, 500)
    perturbed = conditional_gumbel(logits, hard, draws=8)
    assert perturbed.shape == (8, 500, 2, 4)
    assert torch.equal(perturbed.argmax(-1), hard.argmax(-1).expand(8, 500, 2))


def test_conditional_gumbels_match_gumbel_max_conditioned_on_the_argmax():
    # Reference: unconditional Gumbels G, grouped by k = argmax(θ + G). For every class k and coordinate j,
    # the mean of G_j | k from the conditional sampler must agree with the grouped mean within 4 combined SE.
    torch.manual_seed(1)
    logits = torch.tensor([0.5, -0.3, 1.0])
    draws = 60000
    noise = gumbel_noise((draws, 3), logits)
    chosen = (logits + noise).argmax(-1)
    hard = torch.eye(3)[chosen]  # the same classes as S = draws samples, fed to the conditional sampler
    conditional = conditional_gumbel(logits, hard, draws=1)[0] - logits
    for k in range(3):
        rows = chosen == k
        reference, sampled = noise[rows], conditional[rows]
        error = (reference.var(0) / len(reference) + sampled.var(0) / len(sampled)).sqrt()
        assert ((reference.mean(0) - sampled.mean(0)).abs() < 4 * error).all(), k
    # Marginally over D the noise is i.i.d. standard Gumbel: mean γ, variance π²/6 (4 SE).
    assert abs(conditional.mean() - EULER_GAMMA) < 4 * math.sqrt(math.pi**2 / 6 / conditional.numel())


def test_backward_is_the_mean_of_straight_through_gumbel_backwards():
    # With the same conditional draws X_r = θ + G_r, the backward must be the mean over r of the ST-GS
    # backward of each draw, (1/τ)(diag y_r − y_r y_rᵀ)·g with y_r = softmax(X_r / τ), for g = w (f(z) = w·z).
    torch.manual_seed(2)
    logits = torch.randn(2, 5)
    hard = sample_categorical(logits, 3)
    weights, tau, draws = torch.randn(5), 0.7, 6
    torch.manual_seed(3)
    perturbed = conditional_gumbel(logits, hard, draws)
    torch.manual_seed(3)
    leaf = logits.clone().requires_grad_(True)
    z = gumbel_rao_sample(leaf, hard, tau, draws)
    torch.testing.assert_close(z, hard)  # the forward value is the one-hot sample
    gradient = torch.autograd.grad((z @ weights).sum(), leaf)[0]
    soft = (perturbed / tau).softmax(-1)
    jacobian = (torch.diag_embed(soft) - soft.unsqueeze(-1) * soft.unsqueeze(-2)) / tau
    expected = (jacobian @ weights).mean(0).sum(0)  # mean over R draws, sum over the S samples
    torch.testing.assert_close(gradient, expected)


def independent_estimates(estimator, logits: torch.Tensor, f, draws: int) -> torch.Tensor:
    """``draws`` independent gradient estimates at ``logits`` in one batched call: (draws, *logits.shape)."""
    copies = logits.expand(draws, *logits.shape).clone().requires_grad_(True)
    return torch.autograd.grad(estimator(copies, f).sum(), copies)[0]


def test_mean_equals_straight_through_gumbel_mean():
    # Rao-Blackwellization keeps the mean: E[GR] = E[ST-GS] (both biased), per coordinate within 4.5 SE
    # (4 SE plus an allowance for 6 coordinates) on a nonlinear objective of two three-class variables.
    logits = torch.tensor([[0.4, -0.6, 0.1], [1.0, 0.0, -1.0]])
    values = torch.tensor([0.0, 0.5, 1.0])

    def f(z):
        return (z @ values - 0.3) ** 2

    draws = 40000
    torch.manual_seed(4)
    rao = independent_estimates(GumbelRao(draws=10, tau=0.5), logits, f, draws).flatten(1).double()
    straight = independent_estimates(GumbelST(tau=0.5), logits, f, draws).flatten(1).double()
    error = (rao.var(0) / draws + straight.var(0) / draws).sqrt()
    scores = (rao.mean(0) - straight.mean(0)) / error
    assert scores.abs().max() < 4.5, scores
    # and the mean is measurably not the exact gradient (both are biased): more than 10 SE on some coordinate
    leaf = logits.clone().requires_grad_(True)
    exact = torch.autograd.grad((leaf.softmax(-1) * f(torch.eye(3))).sum(), leaf)[0].flatten().double()
    assert ((rao.mean(0) - exact).abs() / (rao.var(0) / draws).sqrt()).max() > 10


def variance_and_error(gradients: torch.Tensor) -> tuple[float, float]:
    """Trace of the covariance of one estimate, and the standard error of that estimate."""
    deviations = ((gradients - gradients.mean(0)) ** 2).sum(1)
    return float(deviations.mean()), float(deviations.std() / math.sqrt(len(deviations)))


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_lower_variance_than_straight_through_gumbel_on_the_vae(tau):
    # Paulus et al. 2021 (Fig. 2, Thm. 1): R = 10 conditional draws lower the variance of ST-GS at the same
    # parameters. On the VAE's fixed probe batch (gradients with respect to the encoder's logits) the gap
    # must exceed 4 SE of the difference.
    torch.manual_seed(5)
    task = VAE(hidden=32, probe_size=16)
    batch = task.probe_batch()
    with torch.no_grad():
        logits = task.distribution(batch)
    f = task.objective(batch)
    draws = 2000
    rao = independent_estimates(GumbelRao(draws=10, tau=tau), logits, f, draws).flatten(1).double()
    straight = independent_estimates(GumbelST(tau=tau), logits, f, draws).flatten(1).double()
    (rao_variance, rao_error), (straight_variance, straight_error) = (
        variance_and_error(rao),
        variance_and_error(straight),
    )
    gap = straight_variance - rao_variance
    assert gap > 4 * math.hypot(rao_error, straight_error), (rao_variance, straight_variance)


def test_draws_must_be_positive():
    with pytest.raises(EstimatorError, match="draws"):
        GumbelRao(draws=0)
