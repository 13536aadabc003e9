"""Pathwise (reparameterization) estimator for Gaussians (Kingma & Welling 2014; Rezende et al. 2014).

    z = μ + σ·ε,  ε ~ N(0, I),   ĝ = ∇_θ f(μ + σε)

Unbiased for differentiable f (Mohamed et al. 2020, §5).
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import Estimator, Gaussian, Objective


class Reparam(Estimator):
    """Gaussian reparameterization: surrogate f(μ + σε); unbiased."""

    latents = ("gaussian",)
    unbiased = True

    def forward(self, params: Gaussian, f: Objective, samples: int = 1) -> Tensor:
        self.check_samples(samples)
        noise = torch.randn((samples, *params.mean.shape), dtype=params.mean.dtype, device=params.mean.device)
        return f(params.mean + params.scale * noise).mean(0)
