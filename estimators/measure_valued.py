"""Measure-valued derivative (MVD) for Gaussians (Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo
Gradient Estimation in Machine Learning", JMLR, §6 and Table 1; Pflug 1989; Heidergott & Vázquez-Abad 2000).

The derivative of a density with respect to one of its parameters is written as a weighted difference of
two densities, ∂_θ p(z; θ) = c_θ (p⁺(z; θ) − p⁻(z; θ)), so that

    ∂_θ E_{p(z;θ)}[f(z)] = c_θ (E_{p⁺}[f(z)] − E_{p⁻}[f(z)]).

For one coordinate of z ~ N(μ, σ²) (Table 1):

- mean:  c = 1/(σ√(2π)),  z⁺ = μ + σW,  z⁻ = μ − σW,  W ~ Weibull(scale √2, shape 2), density w·exp(−w²/2)
  on w > 0 (a Weibull law, also known as the Rayleigh distribution);
- scale: c = 1/σ,  z⁺ = μ + σM,  z⁻ = μ + σε,  M double-sided Maxwell, density m²·exp(−m²/2)/√(2π), and
  ε ~ N(0, 1).

Coupling (``coupling=True``, the paper's variance reduction by common random numbers): the mean uses
the same W on both sides, and the scale uses ε = M·U with U ~ U(0, 1), which is N(0, 1) when M is
double-sided Maxwell, so both sides move together. The parameters are (mean, log_scale), so the scale
estimate is multiplied by σ (chain rule): ĝ_logσ = f(z⁺) − f(z⁻).

In several dimensions only the coordinate being differentiated is replaced; the other coordinates keep the
value of one ordinary draw z ~ p_θ, shared by every coordinate's pair. Each gradient estimate therefore
costs 1 + 4n evaluations of f per sample, n the number of latent coordinates that ``f`` couples (the
trailing dimensions it reduces over), all in one batched call.

The surrogate. Its value is f(z) at the ordinary draw z (detached from θ), so the gradient with respect to
any other parameter that f depends on (a decoder) is the pathwise ∇f(z). The MVD estimates enter as
detached coefficients, (μ − sg[μ])·ĝ_μ + (logσ − sg[logσ])·ĝ_logσ, which are zero in value and give μ and
log σ exactly the MVD gradient. Unbiased, for any integrable f (f need not be differentiable).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from estimators.base import (
    NORMAL,
    Estimator,
    EstimatorError,
    Gaussian,
    Noise,
    NoiseStream,
    Objective,
    coupled_shape,
    noise_stream,
)


def weibull_noise(
    shape: torch.Size, like: Tensor, noise: Noise | None = None, stream: str = "weibull"
) -> Tensor:
    """W ~ Weibull(scale √2, shape 2), density w·exp(−w²/2), by inversion: W = √(−2 log U)."""
    tiny = torch.finfo(like.dtype).tiny
    uniform = noise_stream(noise, stream, shape, like).clamp_min(tiny)
    return torch.sqrt(-2.0 * torch.log(uniform))


def double_sided_maxwell_noise(shape: torch.Size, like: Tensor, noise: Noise | None = None) -> Tensor:
    """M with density m²·exp(−m²/2)/√(2π): a random sign times the norm of a standard 3-d Gaussian."""
    radius = noise_stream(noise, "maxwell", (3, *shape), like, normal=True).norm(dim=0)
    sign = noise_stream(noise, "sign", shape, like) < 0.5
    return torch.where(sign, -radius, radius)


class MeasureValued(Estimator):
    """Gaussian measure-valued derivative: Weibull for the mean, double-sided Maxwell for the scale; unbiased.

    ``coupling`` uses common random numbers for the positive and negative parts (recommended, lower
    variance). ``samples`` is the number of ordinary draws z; each costs 1 + 4n evaluations of f.
    """

    latents = ("gaussian",)
    unbiased = True
    # The draw z = μ + σε (the Gaussian's own stream), then, per sample and coordinate: U of the Weibull draws
    # of the positive and negative parts, the 3-d Gaussian whose norm is a Maxwell draw and its sign, U of
    # the coupled negative part, and the uncoupled negative part's normal.
    noise_streams = (
        NORMAL,
        NoiseStream("weibull", "gaussian"),
        NoiseStream("weibull_negative", "gaussian"),
        NoiseStream("maxwell", "gaussian", normal=True, before=(3,)),
        NoiseStream("sign", "gaussian"),
        NoiseStream("coupling", "gaussian"),
        NoiseStream("normal_negative", "gaussian", normal=True),
    )

    def __init__(self, coupling: bool = True) -> None:
        super().__init__()
        self.coupling = bool(coupling)

    def f_evaluations(self, params: Gaussian, f: Objective, samples: int) -> int:
        """S·(1 + 4n), n the latent coordinates f couples for one data point."""
        mean = params.mean.detach()
        with torch.no_grad():
            kept = f(mean.expand(1, *mean.shape)).dim() - 1
        return samples * (1 + 4 * math.prod(mean.shape[kept:]))

    def forward(self, params: Gaussian, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        """``noise``: pre-drawn noise (``estimators.base.draw_noise``): the draw z from the stream ``normal``
        (shared with the score function and the pathwise estimator), W, M and U from streams of their own."""
        self.check_samples(samples)
        if not isinstance(params, Gaussian):
            raise EstimatorError(
                f"measure_valued differentiates Gaussian latents and expects estimators.Gaussian(mean, "
                f"log_scale), got {type(params).__name__}."
            )
        mean, log_scale = params.mean, params.log_scale
        batch_shape = torch.broadcast_shapes(mean.shape, log_scale.shape)
        location = mean.detach().expand(batch_shape)
        scale = log_scale.detach().exp().expand(batch_shape)
        shape = torch.Size((samples, *batch_shape))

        z = location + scale * noise_stream(noise, "normal", shape, location, normal=True)
        values = f(z)
        coupled = coupled_shape(values, batch_shape, shape)
        kept = values.dim() - 1  # f keeps batch_shape[:kept] and couples the rest
        coordinates = math.prod(coupled)

        weibull = weibull_noise(shape, z, noise)
        maxwell = double_sided_maxwell_noise(shape, z, noise)
        if self.coupling:
            weibull_negative = weibull
            normal = maxwell * noise_stream(noise, "coupling", shape, z)
        else:
            weibull_negative = weibull_noise(shape, z, noise, "weibull_negative")
            normal = noise_stream(noise, "normal_negative", shape, z, normal=True)
        replacements = torch.stack(
            [
                location + scale * weibull,  # mean, positive part
                location - scale * weibull_negative,  # mean, negative part
                location + scale * maxwell,  # scale, positive part
                location + scale * normal,  # scale, negative part
            ]
        )  # (4, S, *B)

        # Coordinate j of the coupled dimensions is replaced in evaluation j; the leading dimensions are
        # independent latent variables of f, so one evaluation replaces coordinate j in all of them at once.
        selector = torch.eye(coordinates, dtype=torch.bool, device=z.device)
        selector = selector.reshape(1, coordinates, 1, *[1] * kept, *coupled)
        perturbed = torch.where(selector, replacements.unsqueeze(1), z.unsqueeze(0).unsqueeze(0))
        with torch.no_grad():
            outcomes = f(perturbed.reshape(-1, *batch_shape)).reshape(4, coordinates, *values.shape)
        # (4, n, S, *B[:k]) -> (4, S, *B): coordinate j's difference sits at coordinate j.
        outcomes = outcomes.movedim(1, -1).reshape(4, *shape)
        grad_mean = (outcomes[0] - outcomes[1]) / (math.sqrt(2 * math.pi) * scale)
        grad_log_scale = outcomes[2] - outcomes[3]  # σ · (1/σ)(f(z⁺) − f(z⁻))

        correction = (mean - mean.detach()) * grad_mean + (log_scale - log_scale.detach()) * grad_log_scale
        if coupled:  # f's value depends on all of its coupled coordinates together
            correction = correction.sum(dim=tuple(range(1 + kept, 1 + len(batch_shape))))
        return (values + correction).mean(0)
