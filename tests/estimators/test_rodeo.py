"""RODEO (estimators.RODEO) against a float64 transcription of the authors' ``discrete_stein_avg`` (equal to
rounding on fixed samples and control-network weights), unbiased with its control variates switched on
(the probe's test of zero bias against exact enumeration, with a biased estimator rejected by the same test
at the same point as the negative control), and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.run.probe.statistics import gradient_statistics
from estimators import RODEO, Exact, StraightThrough
from estimators.base import EstimatorError, draw_noise

LEAK = 0.3


def problem(seed: int = 0, batch: int = 2, variables: int = 3):
    """Two-class logits (B, D, 2) and f(z) = (Σ_i w_i z_i1 + Σ_i v_i z_i0 − c)² + sin(Σ_i u_i z_i1): at the
    one-hot (1 − b, b) its gradient in b is 2s(w − v) + cos(⟨u, b⟩)·u, s the bracket."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, variables, 2, generator=generator, dtype=torch.float64)
    w, v, u = (torch.randn(variables, generator=generator, dtype=torch.float64) for _ in range(3))

    def f(z):
        inner = (z[..., 1] * w).sum(-1) + (z[..., 0] * v).sum(-1) - 0.3
        return inner**2 + torch.sin((z[..., 1] * u).sum(-1))

    def value_and_gradient(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inner = b @ w.numpy() + (1 - b) @ v.numpy() - 0.3
        angle = b @ u.numpy()
        value = inner**2 + np.sin(angle)
        gradient = 2 * inner[..., None] * (w - v).numpy() + np.cos(angle)[..., None] * u.numpy()
        return value, gradient

    return logits, f, value_and_gradient


def randomize(estimator: RODEO, seed: int) -> RODEO:
    """Control variates switched on: α, β and the network's weights (biases too) away from their start."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in estimator.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return estimator.double()


def network(estimator: RODEO, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """SteinControlNNSingleLayer in numpy: dense2(LeakyReLU(densex(x) + densez(z))), x, z (..., 1)."""
    weights = {name: value.detach().numpy() for name, value in estimator.network.named_parameters()}
    hidden = x @ weights["input_x.weight"].T + weights["input_x.bias"]
    hidden = hidden + z @ weights["input_z.weight"].T + weights["input_z.bias"]
    hidden = np.where(hidden > 0, hidden, LEAK * hidden)
    return hidden @ weights["output.weight"].T + weights["output.bias"]


def transcription(estimator: RODEO, logits: np.ndarray, b: np.ndarray, value_and_gradient) -> np.ndarray:
    """The code's ``discrete_stein_avg`` at K = 2, step by step, for samples b (K, bs, D): eta_grads."""
    K = b.shape[0]
    eta = logits[..., 1] - logits[..., 0]
    theta = 1 / (1 + np.exp(-eta))
    f_b, grad_b = value_and_gradient(b)  # (K, bs), (K, bs, D)
    D = theta.shape[-1]
    nbr_mask = np.eye(D)
    nbrs = nbr_mask * (1.0 - b[..., None, :]) + (1.0 - nbr_mask) * b[..., None, :]  # (K, bs, D, D)
    loo_avg_grad_b = (grad_b.sum(0) - grad_b) / (K - 1)
    prod_b_grad_b = (grad_b * b).sum(-1)
    loo_avg_prod_b_grad_b = prod_b_grad_b.sum(0) - prod_b_grad_b
    f_theta = (f_b.sum(0) - f_b) / (K - 1)
    f_nbrs_lin = ((loo_avg_grad_b[..., None, :] * nbrs).sum(-1) - loo_avg_prod_b_grad_b[..., None])[..., None]
    f_x_lin = ((loo_avg_grad_b * b).sum(-1) - loo_avg_prod_b_grad_b)[..., None, None]
    g_nbrs = network(estimator, f_nbrs_lin, np.broadcast_to(f_theta[..., None, None], f_nbrs_lin.shape))
    g_x = network(estimator, f_x_lin, f_theta[..., None, None])[..., 0, :]  # (K, bs, 2)
    dlog_qx = b - theta
    dlog_q_nbrs = nbrs - theta[:, None, :]
    w1 = theta * (1.0 - b) + (1.0 - theta) * b
    w2 = theta * b + (1.0 - theta) * (1.0 - b) - 1.0
    double_cv = (w1 * g_nbrs[..., 0] + w2 * g_x[..., :1]).mean(-1)
    cv = (
        w1[..., None] * g_nbrs[..., 1:] * dlog_q_nbrs + w2[..., None] * (g_x[..., 1:] * dlog_qx)[..., None, :]
    ).mean(-2)
    alpha, beta = float(estimator.alpha.detach()), float(estimator.beta.detach())
    fb_vr = f_b + alpha * double_cv
    fb_vr_not_k = (fb_vr.sum(0) - fb_vr) / (K - 1)
    return ((f_b - fb_vr_not_k)[..., None] * dlog_qx + beta * cv).mean(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rodeo_equals_the_authors_discrete_stein_avg_in_float64(seed):
    logits, f, value_and_gradient = problem(seed)
    estimator = randomize(RODEO(seed=seed), seed + 10)
    noise = draw_noise(logits, 2, generator=torch.Generator().manual_seed(seed))
    leaf = logits.clone().requires_grad_(True)
    estimator(leaf, f, 2, noise=noise).sum().backward()
    bits = (noise["uniform"][..., 1] < torch.sigmoid(logits[..., 1] - logits[..., 0])).double().numpy()
    expected = transcription(estimator, logits.numpy(), bits, value_and_gradient)
    np.testing.assert_allclose(leaf.grad[..., 1].numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(leaf.grad[..., 0].numpy(), -expected, rtol=1e-10, atol=1e-12)
    # The control variates are on: without them (α = β = 0) the estimate is another number, RLOO's.
    rloo = RODEO(seed=seed).double()
    other = logits.clone().requires_grad_(True)
    rloo(other, f, 2, noise=noise).sum().backward()
    assert not np.allclose(other.grad.numpy(), leaf.grad.numpy(), atol=1e-6)


def draws_of(estimator, logits: torch.Tensor, f, samples: int, draws: int) -> torch.Tensor:
    """M independent estimates in one call: the data point repeated M times in the batch, each copy with its
    own samples; row m of the result is the gradient with respect to copy m, (M, D·2)."""
    leaf = logits.repeat(draws, *[1] * (logits.dim() - 1)).requires_grad_(True)
    estimator(leaf, f, samples).sum().backward()
    return leaf.grad.reshape(draws, -1)


@pytest.mark.usefixtures("one_thread")
def test_unbiased_with_its_control_variates_on_by_the_probe_bias_test():
    # One data point of D = 4 coupled Bernoulli variables (16 outcomes: the exact gradient by enumeration),
    # α, β and the network away from their start, S = 2, M = 2000 draws: the test of zero bias does not reject
    # (p > 1e-3); straight-through, biased, is rejected at the same point with the same M (p < 1e-6).
    logits, f, _ = problem(seed=4, batch=1, variables=4)
    estimator = randomize(RODEO(seed=3), 5)
    exact = logits.clone().requires_grad_(True)
    Exact()(exact, f, 1).sum().backward()
    torch.manual_seed(0)
    unbiased = gradient_statistics(draws_of(estimator, logits, f, 2, 2000), exact.grad.reshape(-1))
    assert unbiased["grad_bias_p"] > 1e-3, unbiased
    biased = gradient_statistics(draws_of(StraightThrough(), logits, f, 2, 2000), exact.grad.reshape(-1))
    assert biased["grad_bias_p"] < 1e-6, biased


def test_rodeo_refuses_more_than_two_classes_and_one_sample():
    f = lambda z: z.sum((-1, -2))  # noqa: E731
    with pytest.raises(EstimatorError, match="two-class"):
        RODEO()(torch.zeros(3, 4, 3), f, 2)
    with pytest.raises(EstimatorError, match="at least 2"):
        RODEO()(torch.zeros(3, 4, 2), f, 1)
