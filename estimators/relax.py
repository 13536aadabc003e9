"""RELAX and LAX (Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, "Backpropagation through the Void: Optimizing
control variates for black-box gradient estimation", ICLR).

Both replace REBAR's fixed control variate by a learned function c_φ, trained jointly with the model to
minimise the variance of the estimate (``estimators.base.variance_backward``: ‖ĝ‖², ĝ the estimate with
respect to the distribution's parameters; for an unbiased ĝ its gradient in φ is an unbiased estimate of the
gradient of tr Cov ĝ, §3.3).

**RELAX** (discrete; §3.2): with z, b = H(z), z̃ ~ p(z | b) and the temperature λ as in REBAR
(``estimators.rebar``),

    ĝ = [f(b) − c_φ(z̃)]·∇_θ log p_θ(b) + ∇_θ c_φ(z) − ∇_θ c_φ(z̃),

    c_φ(z) = η·f(σ_λ(z)) + r_ρ(σ_λ(z))   (``relaxed_objective``: REBAR's relaxation plus a learned residual,
                                           the paper's discrete VAEs; 3S evaluations of f)
    c_φ(z) = r_ρ(σ_λ(z))                  (``relaxed_objective=False``: the network alone, the paper's toy
                                           problem; S evaluations of f),

φ = (η, λ, ρ). r_ρ is a small network of the relaxed sample of one data point (``ControlVariateNetwork``).
Unbiased for every φ, for the same reason as REBAR.

**LAX** (continuous, a Gaussian latent; §3.1): with z = μ + σε, f a black box (never differentiated in z),

    ĝ = [f(z) − c_φ(z)]·∇_θ log p_θ(z) + ∇_θ c_φ(z),   c_φ = r_ρ a network of z;

unbiased since E[c_φ(z)·∇ log p(z)] = ∇E[c_φ(z)] = E[∇_θ c_φ(z(θ, ε))]. S evaluations of f.

The variance objective's gradient in φ is autograd's, through the network (as in the authors' code). r_ρ's
derivative in its input is a step (ReLU), and ĝ contains ∇_θ c_φ, so ‖ĝ‖² jumps where a hidden unit changes
sign, and autograd's ∂‖ĝ‖²/∂λ misses the jumps' share of ∂E‖ĝ‖²/∂λ. Measured on the toy (one Bernoulli,
t = 0.45, p = 0.3; the network-only RELAX at λ = 0.4 with its output switched on, s = 1; float64; 20,000
draws; central differences of step 0.02 in log λ on common random numbers): autograd −0.0321 ± 0.0006
against finite differences −0.0253 ± 0.0010, 27% too large here (10 paired standard errors). It steers λ's
training, not the estimate: RELAX is unbiased for every φ. (``scripts/estimator_truths.py`` repeats it.)

Parameters f depends on directly (a decoder) get ∇f at the samples (RELAX with ``relaxed_objective``: also
η(∇f(σ_λ(z)) − ∇f(σ_λ(z̃))), zero in expectation). The network is sized at the first call, from the
number of latent numbers of one data point (f's coupled variables), and initialized from its own seed
(``seed``), the same in every run; its output is scaled by s, which starts at 0, so that c_φ starts as
REBAR's (RELAX) or as no control variate at all (``relaxed_objective=False``, LAX).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from estimators.base import (
    Estimator,
    EstimatorError,
    Gaussian,
    Noise,
    Objective,
    match_dims,
    noise_stream,
)
from estimators.rebar import REBAR


class ControlVariateNetwork(nn.Module):
    """r_ρ(y) = s · MLP(y): y the latent numbers of one data point, flattened; ReLU hidden layers of widths
    ``hidden``; the output scaled by s (initially 0). Built at the first call (``build``) or when a state is
    loaded into it, from the input's size; initialized from ``seed``."""

    def __init__(self, hidden: Sequence[int] = (10,), seed: int = 0) -> None:
        super().__init__()
        self.hidden = [int(width) for width in hidden]
        if any(width < 1 for width in self.hidden):
            raise EstimatorError(f"the control variate's hidden widths must be >= 1, got {list(hidden)}.")
        self.seed = int(seed)
        self.layers: nn.Sequential | None = None
        self.scale = nn.Parameter(torch.zeros(()))

    def build(self, inputs: int) -> None:
        """Create the layers for ``inputs`` numbers per data point, with the dtype and device of ``scale``."""
        widths = [int(inputs), *self.hidden]
        modules: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
                modules += [nn.Linear(width_in, width_out), nn.ReLU()]
            modules.append(nn.Linear(widths[-1], 1))
        self.layers = nn.Sequential(*modules).to(dtype=self.scale.dtype, device=self.scale.device)

    def forward(self, inputs: Tensor) -> Tensor:
        """(..., n) -> (...), computed in the network's dtype and returned in the input's."""
        if self.layers is None:
            self.build(inputs.shape[-1])
        if self.layers[0].in_features != inputs.shape[-1]:
            raise EstimatorError(
                f"the control variate's network was built for {self.layers[0].in_features} latent numbers "
                f"per data point, got {inputs.shape[-1]}: one estimator instance serves one latent shape."
            )
        return self.scale * self.layers(inputs.to(self.scale.dtype)).squeeze(-1).to(inputs.dtype)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        weight = state_dict.get(f"{prefix}layers.0.weight")
        if self.layers is None and weight is not None:  # a checkpoint of a built network: build it first
            self.build(weight.shape[1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def per_data_point(values: Tensor, kept: int) -> Tensor:
    """(S, *B, ...) -> (S, *B[:kept], n): the latent numbers of one data point, flattened."""
    return values.reshape(*values.shape[: 1 + kept], -1)


class RELAX(REBAR):
    """RELAX: ĝ = [f(b) − c_φ(z̃)]∇log p(b) + ∇c_φ(z) − ∇c_φ(z̃), c_φ = η·f(σ_λ) + r_ρ(σ_λ) (or r_ρ alone),
    φ trained on the estimate's variance; unbiased."""

    def __init__(
        self,
        hidden: Sequence[int] = (10,),
        relaxed_objective: bool = True,
        eta: float = 1.0,
        tau: float = 0.5,
        seed: int = 0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    ) -> None:
        super().__init__(eta=eta, tau=tau, optimizer=optimizer)
        self.relaxed_objective = bool(relaxed_objective)
        if not self.relaxed_objective:  # c_φ = r_ρ: no η
            del self.eta
            self.eta = None
        self.network = ControlVariateNetwork(hidden, seed)

    def control_variate(self, relaxed: Tensor, at_relaxed: Tensor | None, kept: int) -> Tensor:
        residual = self.network(per_data_point(2 * relaxed - 1, kept))
        return residual if at_relaxed is None else self.eta * at_relaxed + residual


class LAX(Estimator):
    """LAX for Gaussian latents: ĝ = [f(z) − c_φ(z)]∇log p(z) + ∇c_φ(z(θ, ε)), c_φ a network trained on the
    estimate's variance; f a black box; unbiased."""

    latents = ("gaussian",)
    unbiased = True

    def __init__(
        self,
        hidden: Sequence[int] = (10,),
        seed: int = 0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    ) -> None:
        super().__init__()
        self.network = ControlVariateNetwork(hidden, seed)
        self.optimizer = optimizer

    def forward(self, params: Gaussian, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        """``noise`` (stream ``normal``) fixes ε (common random numbers)."""
        self.check_samples(samples)
        if not isinstance(params, Gaussian):
            raise EstimatorError(
                f"LAX is for Gaussian latents (estimators.Gaussian(mean, log_scale)); got "
                f"{type(params).__name__}. For categorical latents use relax."
            )
        batch = torch.broadcast_shapes(params.mean.shape, params.log_scale.shape)
        epsilon = noise_stream(noise, "normal", (samples, *batch), params.mean, normal=True)
        z = params.mean + params.scale * epsilon
        values = f(z.detach())
        kept = values.dim() - 1
        log_prob = match_dims(params.log_prob(z.detach()), values)
        control = self.network(per_data_point(z, kept))
        coefficient = values.detach() - control  # graph to φ kept; its path to θ is multiplied by 0 below
        surrogate = values + coefficient * (log_prob - log_prob.detach()) + (control - control.detach())
        return surrogate.mean(0)
