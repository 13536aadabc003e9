"""IndeCateR (De Smet et al. 2023) is local expectation gradients under its authors' name: the config
``indecater`` builds ``leg``'s class, and its estimate equals a float64 transcription of the CatLog-derivative
estimator for independent categoricals, Σ_i Σ_c ∇p_i(c)·f(z_{−i}, c), on the same draws (to rounding)."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from estimators import LocalExpectation
from tests.helpers import CONF


def transcription(logits: np.ndarray, index: np.ndarray, f) -> np.ndarray:
    """(1/S) Σ_s Σ_i Σ_c ∇_θ p_i(c)·f(z⁽ˢ⁾ with variable i set to c): for every sample and variable, f at
    every one of the C classes (the sampled one included, as the authors count it), no baseline."""
    samples, variables = index.shape
    classes = logits.shape[-1]
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # (L, C)
    gradient = np.zeros_like(logits)
    for s in range(samples):
        for i in range(variables):
            for c in range(classes):
                replaced = index[s].copy()
                replaced[i] = c
                value = f(replaced)
                # ∂p_i(c)/∂θ_i = p_i(c)·(1[c = k] − p_i(k)), k over the classes of variable i
                gradient[i] += value * probabilities[i, c] * (np.eye(classes)[c] - probabilities[i])
    return gradient / samples


def test_indecater_is_leg_and_equals_the_catlog_derivative_estimator():
    node = OmegaConf.load(CONF / "estimator" / "indecater.yaml")
    assert node._target_ == OmegaConf.load(CONF / "estimator" / "leg.yaml")._target_

    generator = torch.Generator().manual_seed(3)
    variables, classes, samples = 4, 5, 3
    logits = torch.randn(variables, classes, generator=generator, dtype=torch.float64)
    weights = torch.randn(variables, classes, generator=generator, dtype=torch.float64)

    def f(z):  # couples the L variables (not separable): (Σ_i ⟨w_i, z_i⟩)² + sin of the same sum
        total = (z * weights).sum((-1, -2))
        return total**2 + torch.sin(3 * total)

    estimate = logits.clone().requires_grad_(True)
    torch.manual_seed(11)  # the estimator's draws: D = argmax(θ + G(U)), U = torch.rand((S, L, C))
    LocalExpectation()(estimate, f, samples).sum().backward()

    torch.manual_seed(11)
    uniform = torch.rand((samples, variables, classes), dtype=torch.float64).clamp(1e-300, 1 - 1e-7)
    index = (logits + -torch.log(-torch.log(uniform))).argmax(-1).numpy()

    def f_of_index(classes_of: np.ndarray) -> float:
        return float(f(torch.from_numpy(np.eye(classes)[classes_of])))

    expected = transcription(logits.numpy(), index, f_of_index)
    np.testing.assert_allclose(estimate.grad.numpy(), expected, rtol=1e-10, atol=1e-12)
    # Negative control: the same transcription on other draws is another number.
    other = transcription(logits.numpy(), (index + 1) % classes, f_of_index)
    assert not np.allclose(estimate.grad.numpy(), other, atol=1e-6)
