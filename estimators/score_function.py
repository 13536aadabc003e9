"""Score-function estimator (REINFORCE, likelihood ratio; Williams 1992), with optional baselines.

    ∇_θ E_{z~p_θ}[f(z)] = E[(f(z) − b)·∇_θ log p_θ(z)] + E[∇_θ f(z)]

holds for any b that does not depend on z (Mohamed et al. 2020, "Monte Carlo Gradient Estimation in
Machine Learning", §4). Baselines:

- ``none``: b = 0.
- ``ema``: b = exponential moving average of past f values (updated only in training mode, so probes do
  not move it); independent of the current samples, hence unbiased.
- ``loo``: leave-one-out, b_i = mean_{j≠i} f(z_j) over the S samples of one estimate (Kool et al. 2019,
  "Buy 4 REINFORCE samples, get a baseline for free!"); needs S ≥ 2, unbiased because b_i does not depend
  on z_i.
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import (
    Estimator,
    EstimatorError,
    Gaussian,
    Noise,
    Objective,
    match_dims,
    noise_stream,
    sample_categorical,
)

BASELINES = ("none", "ema", "loo")


def sample_with_log_prob(
    params: Tensor | Gaussian, samples: int, noise: Noise | None = None
) -> tuple[Tensor, Tensor]:
    """Samples z (no gradient path) and log p_θ(z) per latent variable (with gradient), shape (S, *B).

    ``noise``: pre-drawn noise (``estimators.base.draw_noise``; streams ``uniform`` or ``normal``).
    """
    if isinstance(params, Gaussian):
        epsilon = noise_stream(noise, "normal", (samples, *params.mean.shape), params.mean, normal=True)
        z = (params.mean + params.scale * epsilon).detach()
        return z, params.log_prob(z)
    z = sample_categorical(params, samples, noise)
    return z, (z * torch.log_softmax(params, dim=-1)).sum(-1)


class ScoreFunction(Estimator):
    """REINFORCE: surrogate f(z) + (f(z) − b)·(log p_θ(z) − sg[log p_θ(z)]), z ~ p_θ; unbiased.

    The value of the surrogate is f(z); its gradient is (f(z) − b)·∇log p_θ(z) + ∇f(z).
    """

    latents = ("categorical", "gaussian")
    unbiased = True

    def __init__(self, baseline: str = "none", decay: float = 0.9) -> None:
        super().__init__()
        if baseline not in BASELINES:
            raise EstimatorError(f"Unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}.")
        if not 0.0 <= decay < 1.0:
            raise EstimatorError(f"The EMA baseline's decay must lie in [0, 1), got decay={decay}.")
        self.baseline = baseline
        self.decay = decay
        self.min_samples = 2 if baseline == "loo" else 1
        self.register_buffer("ema_value", torch.zeros(()))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def baseline_for(self, values: Tensor) -> Tensor:
        samples = values.shape[0]
        if self.baseline == "loo":
            return (values.sum(0, keepdim=True) - values) / (samples - 1)
        if self.baseline == "ema":
            updates = int(self.ema_updates)
            # Bias-corrected as in Adam, so early estimates are not pulled towards the initial 0.
            current = torch.zeros_like(self.ema_value)
            if updates:
                current = self.ema_value / (1 - self.decay**updates)
            if self.training:
                self.ema_value.mul_(self.decay).add_((1 - self.decay) * values.mean())
                self.ema_updates.add_(1)
            return current
        return torch.zeros((), dtype=values.dtype, device=values.device)

    def forward(
        self, params: Tensor | Gaussian, f: Objective, samples: int = 1, noise: Noise | None = None
    ) -> Tensor:
        self.check_samples(samples)
        z, log_prob = sample_with_log_prob(params, samples, noise)
        values = f(z)
        log_prob = match_dims(log_prob, values)
        advantage = values.detach() - self.baseline_for(values.detach())
        surrogate = values + advantage * (log_prob - log_prob.detach())
        return surrogate.mean(0)
