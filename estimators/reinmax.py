"""ReinMax (Liu, Chen, Cheng, Gao & Ma 2023, "Bridging Discrete and Backpropagation: Straight-Through and
Beyond", NeurIPS; Algorithm 2).

Forward: D ~ Cat(π₀), π₀ = softmax(θ), one-hot, exactly as straight-through. Backward, with g = ∂f/∂D
the gradient arriving at the one-hot sample:

    ∇_θ = 2·(diag π₁ − π₁π₁ᵀ)·g − ½·(diag π₀ − π₀π₀ᵀ)·g,    π₁ = (softmax(θ/τ) + D) / 2.

Liu et al. show that straight-through is the forward Euler approximation of the exact gradient (first-order
accurate) and derive ReinMax from Heun's method: second-order accurate at the cost of one more softmax.
At τ = 1 its expectation over D is the exact gradient whenever f is at most quadratic in z (tested);
in general it is biased. Like the authors' reference code we require τ ≥ 1 ("ReinMax prefers τ ≥ 1").

The backward is written with ``softmax_jacobian_path``: a zero-valued term whose gradient with respect to θ
is (diag p − ppᵀ)·g with p held fixed, so no custom ``autograd.Function`` is needed and the estimator works
under ``torch.func.vmap``. τ can be annealed (``estimators.schedule``), never below 1.
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import EstimatorError, Noise, Objective, expand_samples, sample_categorical
from estimators.schedule import TemperatureEstimator


def softmax_jacobian_path(probs: Tensor, logits: Tensor) -> Tensor:
    """A tensor whose value is 0 and whose vector-Jacobian product with g is (diag p − ppᵀ)·g.

    h = p ⊙ (δ − ⟨p, δ⟩) with δ = θ − sg[θ] and p = sg[probs] gives ∂h_i/∂θ_k = p_i(1[i=k] − p_k), the
    Jacobian of a softmax whose output is p, symmetric, so its transpose applied to g is (diag p − ppᵀ)g.
    """
    probs = probs.detach()
    delta = logits - logits.detach()
    return probs * (delta - (probs * delta).sum(-1, keepdim=True))


def reinmax_sample(logits: Tensor, hard: Tensor, tau: float) -> Tensor:
    """The one-hot samples ``hard`` (shape (S, *logits.shape)) carrying the ReinMax backward to ``logits``."""
    expanded = expand_samples(logits, hard.shape[0])
    probs = expanded.softmax(-1)  # π₀
    shifted = ((expanded / tau).softmax(-1) + hard) / 2  # π₁
    return hard + 2 * softmax_jacobian_path(shifted, expanded) - 0.5 * softmax_jacobian_path(probs, expanded)


class ReinMax(TemperatureEstimator):
    """ReinMax: f(D) forward; backward 2(diag π₁ − π₁π₁ᵀ)g − ½(diag π₀ − π₀π₀ᵀ)g; biased, second order."""

    latents = ("categorical",)
    unbiased = False

    def __init__(
        self,
        tau: float = 1.0,
        tau_min: float | None = None,
        anneal_rate: float = 0.0,
        anneal_every: int = 1,
    ) -> None:
        super().__init__(tau, tau_min, anneal_rate, anneal_every)
        lowest = self.schedule.tau if self.schedule.constant else self.schedule.tau_min
        if lowest < 1:
            raise EstimatorError(
                f"ReinMax needs a temperature >= 1 (Liu et al. 2023; their reference code refuses tau < 1), "
                f"but tau={self.schedule.tau} with tau_min={self.schedule.tau_min} reaches {lowest}."
            )

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        hard = sample_categorical(logits, samples, noise)
        return f(reinmax_sample(logits, hard, self.tau)).mean(0)
