"""The Gaussian task: z ~ N(μ, diag σ²) in D dimensions, parameters μ and log σ, objective Σ_d E[f(z_d)].

Closed forms (Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine Learning", §3):

- ``square``: f(z) = (z − k)²,    E f = (μ − k)² + σ²
- ``cos``:    f(z) = cos(k z),    E f = cos(k μ) · exp(−k²σ²/2)
- ``exp``:    f(z) = exp(−k z²),  E f = exp(−k μ² / (1 + 2kσ²)) / √(1 + 2kσ²)

The analytic gradient is autograd of the closed form.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.tasks.base import Task
from bench.tasks.checks import check_arguments, number, one_of, whole
from estimators.base import Gaussian as GaussianParams

FUNCTIONS = {
    "square": lambda z, k: (z - k) ** 2,
    "cos": lambda z, k: torch.cos(k * z),
    "exp": lambda z, k: torch.exp(-k * z**2),
}


def expected_value(name: str, mean: Tensor, scale: Tensor, k: float) -> Tensor:
    """E[f(z)] for z ~ N(mean, scale²), elementwise."""
    if name == "square":
        return (mean - k) ** 2 + scale**2
    if name == "cos":
        return torch.cos(k * mean) * torch.exp(-(k**2) * scale**2 / 2)
    spread = 1 + 2 * k * scale**2
    return torch.exp(-k * mean**2 / spread) / torch.sqrt(spread)


class GaussianTask(Task):
    latent = "gaussian"
    reference = "analytic"

    def __init__(
        self, dim: int = 1, f: str = "square", k: float = 1.0, mu0: float = 1.0, sigma0: float = 1.0
    ):
        super().__init__()
        check_arguments(
            dict(dim=dim, f=f, k=k, mu0=mu0, sigma0=sigma0),
            {
                "dim": whole(least=1),
                "f": one_of(FUNCTIONS),
                "k": number(least=0).explained("f = exp(-k z^2) needs k >= 0 for a finite expectation.")
                if f == "exp"
                else number(),
                "mu0": number(),
                "sigma0": number(above=0).explained("It is a standard deviation."),
            },
        )
        self.f_name, self.k = f, float(k)
        # The infimum of Σ_d E f(z_d) over μ and σ: σ → 0 at the best μ (square, cos), or σ → ∞ (exp).
        self.best_known_objective = float(-dim) if f == "cos" else 0.0
        self.mean = nn.Parameter(torch.full((dim,), float(mu0)))
        self.log_scale = nn.Parameter(torch.full((dim,), math.log(sigma0)))

    def distribution(self, batch=None) -> GaussianParams:
        return GaussianParams(self.mean, self.log_scale)

    def objective(self, batch=None):
        function, k = FUNCTIONS[self.f_name], self.k
        return lambda z: function(z, k).sum(-1)

    def exact_objective(self) -> Tensor:
        return expected_value(self.f_name, self.mean, self.log_scale.exp(), self.k).sum()

    def probed_parameters(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "log_scale": self.log_scale}

    def reference_gradient(self, batch=None) -> list[Tensor]:
        with torch.enable_grad():
            return list(torch.autograd.grad(self.exact_objective(), [self.mean, self.log_scale]))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {
            "objective": float(self.exact_objective()),
            "mean": float(self.mean.mean()),
            "scale": float(self.log_scale.exp().mean()),
        }
