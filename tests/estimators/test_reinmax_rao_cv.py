"""ReinMax-Rao and ReinMax-CV against independent float64 transcriptions of the authors' formulas on fixed
noise (equal to rounding), ReinMax-CV with its control variate off against ReinMax (equal on shared noise),
and ReinMax-Rao's Rao-Blackwellized Jacobian against its conditional expectation, computed by numerical
integration for two classes (within 4 standard errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from estimators import ReinMax, ReinMaxCV, ReinMaxRao
from estimators.base import EstimatorError, draw_noise

DRAWS = 6


def problem(seed: int = 0, batch: int = 3, variables: int = 2, classes: int = 5):
    """Logits (B, L, C) and f(z) = Σ_b (Σ_l ⟨w_l, z_bl⟩ − c)², whose gradient at D is known in closed form."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, variables, classes, generator=generator, dtype=torch.float64)
    weights = torch.randn(variables, classes, generator=generator, dtype=torch.float64)

    def f(z):
        return ((z * weights).sum((-1, -2)) - 0.3) ** 2

    def gradient_at(hard):  # ∂f/∂z at the one-hot D, (S, B, L, C)
        return 2 * ((hard * weights).sum((-1, -2)) - 0.3)[..., None, None] * weights

    return logits, f, gradient_at


def jacobian(p: np.ndarray) -> np.ndarray:
    """diag p − ppᵀ for every leading index of p (..., C) → (..., C, C)."""
    return np.einsum("...i,ij->...ij", p, np.eye(p.shape[-1])) - p[..., :, None] * p[..., None, :]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def conditional_perturbation(logits: np.ndarray, hard: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """θ + G with G standard Gumbel given argmax(θ + G) = D, from E = −log U (the authors' ``rao_gumbel_v3``
    construction): X_D = log Z − log E_D, X_j = −log(E_j/exp θ_j + E_D/Z)."""
    exponential = -np.log(uniform)  # (R, S, ..., C)
    weights = np.exp(logits)
    partition = weights.sum(-1, keepdims=True)
    chosen = (exponential * hard).sum(-1, keepdims=True)
    others = -np.log(exponential / weights + chosen / partition)
    return np.where(hard > 0, np.log(partition) - np.log(chosen), others)


def sampled(logits: torch.Tensor, noise: dict) -> np.ndarray:
    """D = one_hot(argmax(θ + G)), G = −log(−log U) from the noise's stream ``uniform``."""
    uniform = noise["uniform"].double().clamp(torch.finfo(torch.float64).tiny, 1 - 1e-7).numpy()
    perturbed = logits.detach().numpy() + -np.log(-np.log(uniform))
    return np.eye(logits.shape[-1])[perturbed.argmax(-1)], -np.log(-np.log(uniform))


def estimate(estimator, logits: torch.Tensor, f, samples: int, noise: dict, seed: int) -> np.ndarray:
    logits = logits.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the estimator's conditional draws: torch.rand((R, S, *B, C)), float64
    estimator(logits, f, samples, noise=noise).sum().backward()
    return logits.grad.numpy()


def conditional_uniforms(seed: int, draws: int, shape) -> np.ndarray:
    torch.manual_seed(seed)
    uniform = torch.rand((draws, *shape), dtype=torch.float64)
    return uniform.clamp(torch.finfo(torch.float64).tiny, 1 - 1e-7).numpy()


def apply(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...j->...i", matrices, vectors)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_reinmax_rao_equals_its_float64_transcription(tau):
    logits, f, gradient_at = problem()
    samples = 3
    noise = draw_noise(logits, samples, generator=torch.Generator().manual_seed(5))
    got = estimate(ReinMaxRao(draws=DRAWS, tau=tau), logits, f, samples, noise, seed=9)

    hard, _ = sampled(logits, noise)  # (S, B, L, C)
    g = gradient_at(torch.from_numpy(hard)).numpy()
    p0 = softmax(logits.numpy())
    shifted = np.log((p0 + hard) / 2)  # θ₁ = log((π₀ + D)/2)
    perturbed = conditional_perturbation(shifted, hard, conditional_uniforms(9, DRAWS, hard.shape))
    rao = jacobian(softmax(perturbed / tau)).mean(0) / tau  # J̄, (S, B, L, C, C)
    per_sample = 2 * apply(rao, g) - 0.5 * apply(jacobian(p0), g)
    expected = per_sample.mean(0)  # the surrogate is the mean over the S samples
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("tau", "tau2", "eta"), [(1.0, 1.0, 1.0), (1.3, 0.5, 0.7), (2.0, 2.0, -0.4)])
def test_reinmax_cv_equals_its_float64_transcription(tau, tau2, eta):
    logits, f, gradient_at = problem(seed=1)
    samples = 2
    noise = draw_noise(logits, samples, generator=torch.Generator().manual_seed(6))
    got = estimate(ReinMaxCV(eta=eta, tau2=tau2, draws=DRAWS, tau=tau), logits, f, samples, noise, seed=4)

    hard, gumbel = sampled(logits, noise)
    g = gradient_at(torch.from_numpy(hard)).numpy()
    theta = logits.numpy()
    p0 = softmax(theta)
    p1 = (softmax(theta / tau) + hard) / 2
    reinmax = 2 * apply(jacobian(p1), g) - 0.5 * apply(jacobian(p0), g)
    shifted = np.log((p0 + hard) / 2)
    sampled_jacobian = jacobian(softmax((shifted + gumbel) / tau2)) / tau2  # J_GS
    perturbed = conditional_perturbation(shifted, hard, conditional_uniforms(4, DRAWS, hard.shape))
    averaged_jacobian = jacobian(softmax(perturbed / tau2)).mean(0) / tau2  # J̄_GR
    per_sample = reinmax + eta * (apply(averaged_jacobian, g) - apply(sampled_jacobian, g))
    np.testing.assert_allclose(got, per_sample.mean(0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau", [1.0, 1.5])
def test_reinmax_cv_without_its_control_variate_is_reinmax(tau):
    logits, f, _ = problem(seed=2)
    noise = draw_noise(logits, 4, generator=torch.Generator().manual_seed(8))
    without = estimate(ReinMaxCV(eta=0.0, tau=tau), logits, f, 4, noise, seed=1)
    reinmax = estimate(ReinMax(tau=tau), logits, f, 4, noise, seed=1)
    assert np.array_equal(without, reinmax)
    # Negative control: the control variate switched on moves the estimate.
    assert not np.allclose(estimate(ReinMaxCV(eta=1.0, tau=tau), logits, f, 4, noise, seed=1), reinmax)


def test_reinmax_rao_averages_the_jacobian_over_the_conditional_gumbel_distribution():
    # Two classes, f(z) = z₁ (so g = (0, 1)) and the sample fixed at D = 1: the estimate is
    # 2·E[s(1 − s) | D]/τ·(−1, 1) − ½·π₀(1 − π₀)·(−1, 1) in expectation, s = σ((Δ + L)/τ), L ~ Logistic,
    # conditioned on Δ + L > 0, Δ = log((1 + p)/(1 − p)) the log-odds of θ₁ = log((π₀ + D)/2).
    p, tau, samples, repeats = 0.3, 0.7, 4000, 12
    logits = torch.tensor([[0.0, math.log(p / (1 - p))]], dtype=torch.float64)
    uniform = torch.tensor([0.01, 0.99], dtype=torch.float64).expand(samples, 1, 2)  # D = 1 in every sample
    noise = {"uniform": uniform, "antithetic": torch.full((samples // 2, 1), 0.5, dtype=torch.float64)}
    estimator = ReinMaxRao(draws=1, tau=tau)
    estimates = np.array(
        [
            estimate(estimator, logits, lambda z: z[..., 1].sum(-1), samples, noise, seed)[0, 1]
            for seed in range(repeats)
        ]
    )
    delta = math.log((1 + p) / (1 - p))

    def density(x: float) -> float:  # logistic density of L at x − Δ
        e = math.exp(-abs(x - delta))
        return e / (1 + e) ** 2

    def slope(x: float) -> float:  # σ'(x/τ)
        s = 1 / (1 + math.exp(-x / tau))
        return s * (1 - s)

    mass = integrate.quad(density, 0, math.inf)[0]
    conditional = integrate.quad(lambda x: slope(x) * density(x), 0, math.inf)[0] / mass
    expected = 2 * conditional / tau - 0.5 * p * (1 - p)
    standard_error = estimates.std(ddof=1) / math.sqrt(repeats)
    assert abs(estimates.mean() - expected) < 4 * standard_error, (estimates.mean(), expected, standard_error)
    # Negative control: ReinMax's own Jacobian at π₁ = (π₀ + D)/2 is a different number, far outside.
    reinmax_value = 2 * ((1 + p) / 2) * (1 - (1 + p) / 2) - 0.5 * p * (1 - p)
    assert abs(estimates.mean() - reinmax_value) > 20 * standard_error


def test_bad_settings_are_refused_with_the_key():
    with pytest.raises(EstimatorError, match="draws"):
        ReinMaxRao(draws=0)
    with pytest.raises(EstimatorError, match="eta"):
        ReinMaxCV(eta=float("nan"))
    with pytest.raises(EstimatorError, match="tau"):
        ReinMaxCV(tau2=0.0)
