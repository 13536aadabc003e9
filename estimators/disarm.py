"""DisARM for Bernoulli latents (Dong, Mnih & Tucker 2020, "DisARM: An Antithetic Gradient Estimator for
Binary Latent Variables", NeurIPS).

A Bernoulli variable is a categorical with C = 2 classes here: logits (..., 2), b = 1 is class 1, and the
log-odds are θ = logits₁ − logits₀, so p(b = 1) = σ(θ). One antithetic pair shares a uniform u per
variable:

    b = 1[1 − u < σ(θ)],   b̃ = 1[u < σ(θ)]           (each marginally Bernoulli(σ(θ)))

    ĝ_θᵢ = ½ (f(b) − f(b̃)) · (−1)^{b̃ᵢ} · 1[bᵢ ≠ b̃ᵢ] · σ(|θᵢ|)

which is ARM (Yin & Zhou 2019) with the antithetic augmentation integrated out analytically (a
conditional expectation of ARM, so its variance is no larger than ARM's); unbiased. The gradient with
respect to the two logits follows by the chain rule (∂θ/∂logits₁ = 1, ∂θ/∂logits₀ = −1).

``samples`` counts evaluations of f, as for every other estimator, so comparisons at equal S are at
equal cost: S must be even, and one estimate averages the DisARM estimates of S/2 independent antithetic
pairs (S = 2: one pair, the paper's setting, comparable to RLOO with S = 2).

The surrogate's value is the mean of f over all 2·(S/2) samples; f is evaluated at the detached samples, so
parameters f depends on (a decoder) get the pathwise ∇f. The DisARM estimate enters as a detached
coefficient, (θ − sg[θ])·ĝ_θ, zero in value.
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import (
    Estimator,
    EstimatorError,
    Noise,
    NoiseStream,
    Objective,
    coupled_shape,
    noise_stream,
)


class DisARM(Estimator):
    """DisARM antithetic estimator for Bernoulli (two-class categorical) latents; unbiased; S even."""

    latents = ("categorical",)
    unbiased = True
    min_samples = 2
    # One uniform per antithetic pair and variable (not per class): u of b = 1[1 − u < σ(θ)], b̃ = 1[u < σ(θ)].
    noise_streams = (NoiseStream("antithetic", "categorical", pairs=True, event=False),)

    def check_samples(self, samples: int) -> None:
        super().check_samples(samples)
        if samples % 2:
            raise EstimatorError(
                f"DisARM draws antithetic pairs, so samples (evaluations of f per estimate) must be even, "
                f"got samples={samples}; samples=2 is one pair."
            )

    def forward(self, logits: Tensor, f: Objective, samples: int = 2, noise: Noise | None = None) -> Tensor:
        """``noise``: pre-drawn noise (``estimators.base.draw_noise``), whose stream ``antithetic`` gives
        the pairs' uniforms u."""
        self.check_samples(samples)
        if logits.dim() == 0 or logits.shape[-1] != 2:
            raise EstimatorError(
                f"DisARM is for Bernoulli latents, given as two-class logits of shape (..., 2); got logits "
                f"of shape {tuple(logits.shape)}. For more than two classes use e.g. score_function or rloo."
            )
        pairs = samples // 2
        log_odds = logits[..., 1] - logits[..., 0]
        probability = torch.sigmoid(log_odds.detach())
        uniform = noise_stream(noise, "antithetic", (pairs, *log_odds.shape), logits)
        first = (1 - uniform < probability).to(logits.dtype)  # b
        second = (uniform < probability).to(logits.dtype)  # b̃, antithetic to b
        bits = torch.cat([first, second])
        point = torch.stack([1 - bits, bits], dim=-1)  # one-hot: class 1 ⇔ b = 1
        values = f(point)  # (2P, *B[:k])
        coupled = len(coupled_shape(values, log_odds.shape, point.shape))  # the variables f couples
        kept = values.dim() - 1
        difference = (values[:pairs] - values[pairs:]).detach()
        difference = difference.reshape(*difference.shape, *[1] * coupled)  # broadcast over coupled variables
        sign = 1 - 2 * second  # (−1)^b̃
        differ = (first != second).to(logits.dtype)
        grad_log_odds = 0.5 * difference * sign * differ * torch.sigmoid(log_odds.detach().abs())  # (P, *B)
        correction = (log_odds - log_odds.detach()) * grad_log_odds
        if coupled:  # f's value depends on all of its coupled variables together
            correction = correction.sum(dim=tuple(range(1 + kept, 1 + log_odds.dim())))
        return values.mean(0) + correction.mean(0)
