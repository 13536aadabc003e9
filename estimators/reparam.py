"""Pathwise (reparameterization) estimator for Gaussians (Kingma & Welling 2014; Rezende et al. 2014).

    z = μ + σ·ε,  ε ~ N(0, I),   ĝ = ∇_θ f(μ + σε)

Unbiased for differentiable f (Mohamed et al. 2020, §5).
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Estimator, Gaussian, Noise, Objective, noise_stream


class Reparam(Estimator):
    """Gaussian reparameterization: surrogate f(μ + σε); unbiased."""

    latents = ("gaussian",)
    unbiased = True

    def forward(self, params: Gaussian, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        epsilon = noise_stream(noise, "normal", (samples, *params.mean.shape), params.mean, normal=True)
        return f(params.mean + params.scale * epsilon).mean(0)
