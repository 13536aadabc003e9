"""ReinMax-CV: ReinMax plus a control variate weighted by η (Wang & Bui 2026, "Beyond ReinMax: Low-Variance
Gradient Estimators for Discrete Latent Variables", arXiv 2603.08257; the authors' code
``danielwang0452/ReinMax_ASC``, method ``reinmax_cv``, run by ``run_reinmax_cv.py`` with η, τ₂).

Forward: D = one_hot(argmax(θ + G)), G standard Gumbel noise: an exact sample of Cat(π₀), π₀ = softmax(θ).
Backward, with g = ∂f/∂D:

    ∇_θ = ReinMax_τ(g) + η·(J̄_GR − J_GS)·g,
    ReinMax_τ(g) = 2·(diag π₁ − π₁π₁ᵀ)·g − ½·(diag π₀ − π₀π₀ᵀ)·g,        π₁ = (softmax(θ/τ) + D)/2,
    J_GS  = (diag y − yyᵀ)/τ₂,   y = softmax((θ₁ + G)/τ₂),              θ₁ = log((π₀ + D)/2),
    J̄_GR = (1/R) Σ_r (diag y⁽ʳ⁾ − y⁽ʳ⁾y⁽ʳ⁾ᵀ)/τ₂,   y⁽ʳ⁾ = softmax((θ₁ + G_r)/τ₂),
    G_r ~ Gumbel given argmax(θ₁ + G_r) = D.

J_GS is the Jacobian of a Gumbel-Softmax relaxation at θ₁ under the noise of the sample itself, J̄_GR its
Rao-Blackwellized counterpart (the mean over R Gumbel draws conditioned on D, as in ``reinmax_rao``): their
difference is the control variate, whose weight η the authors tune (``run_reinmax_cv.py``: η = 1, τ₂ = 1 by
default; their ``hyperparameters.py`` takes τ = 1.3 for the 8×4 MNIST VAE). With η = 0 the estimator is
ReinMax at τ (tested, equal to rounding on shared noise).

Where this follows the code, and where not. The ReinMax part, π₁ from softmax(θ/τ), θ₁ from π₀ at
temperature 1, the R = 100 conditional draws given D by the top-down construction (``rao_gumbel_v4``) and
the final ``grad_reinmax − η·grad_GS + η·grad_GR`` follow ``reinmax_jacobians.py`` (the branch
``reinmax_cv``; one of its two versions fixes the ReinMax part's τ at 1, the other uses τ, as here). In
J_GS the code adds to θ₁ the tensor it saved in the forward pass under the name G, which is the relaxed
sample softmax((θ + G)/τ), not the noise G, and takes that softmax at temperature 1 before dividing by τ₂;
we use the Gumbel noise G and the temperature τ₂ of J̄_GR, the control variate the paper's formula
describes. (The authors' training path, ``mnist_vae/model``, was not available to check which one it runs.)
The control variate is not of mean zero given D: G given D is Gumbel noise conditioned under θ, the draws
G_r under θ₁; the estimator is biased, as ReinMax is.

Cost: one evaluation of f per sample; R + 1 softmaxes of C classes per variable. Written with
``softmax_jacobian_path`` (no custom autograd function), so it runs under ``torch.func.vmap``; D comes from
the stream ``uniform`` (common random numbers with every Gumbel-max estimator), the R conditional draws from
the global generator.
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import (
    EstimatorError,
    Noise,
    Objective,
    check_temperature,
    expand_samples,
    gumbel_noise,
    one_hot_like,
)
from estimators.reinmax import reinmax_sample, softmax_jacobian_path
from estimators.reinmax_rao import check_draws, rao_jacobian_path
from estimators.schedule import TemperatureEstimator


class ReinMaxCV(TemperatureEstimator):
    """ReinMax-CV: f(D) forward; backward ReinMax_τ(g) + η(J̄_GR − J_GS)g, a Gumbel-Softmax Jacobian at
    log((π₀ + D)/2) minus its mean over Gumbel draws conditioned on D as the control variate; biased."""

    latents = ("categorical",)
    unbiased = False

    def __init__(
        self,
        eta: float = 1.0,
        tau2: float = 1.0,
        draws: int = 100,
        tau: float = 1.0,
        tau_min: float | None = None,
        anneal_rate: float = 0.0,
        anneal_every: int = 1,
    ) -> None:
        super().__init__(tau, tau_min, anneal_rate, anneal_every)
        self.eta = float(eta)
        if self.eta != self.eta or abs(self.eta) == float("inf"):
            raise EstimatorError(f"the control variate's weight eta must be a finite number, got eta={eta}.")
        self.tau2 = check_temperature(tau2)
        self.draws = check_draws("ReinMax-CV", draws)

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        """``noise`` (stream ``uniform``) fixes the Gumbel noise G, hence D; the R conditional draws are the
        estimator's own, from the global generator."""
        self.check_samples(samples)
        expanded = expand_samples(logits, samples)
        gumbel = gumbel_noise(expanded.shape, logits, noise)  # G
        hard = one_hot_like((expanded.detach() + gumbel).argmax(-1), expanded)  # D = one_hot(argmax(θ + G))
        z = reinmax_sample(logits, hard, self.tau)
        if self.eta:
            shifted = ((expanded.detach().softmax(-1) + hard) / 2).log()  # θ₁ = log((π₀ + D)/2)
            relaxed = ((shifted + gumbel) / self.tau2).softmax(-1)  # y, under the sample's own noise
            sampled = softmax_jacobian_path(relaxed, expanded) / self.tau2  # J_GS path
            averaged = rao_jacobian_path(shifted, expanded, hard, self.tau2, self.draws)  # J̄_GR path
            z = z + self.eta * (averaged - sampled)
        return f(z).mean(0)
