"""Stochastic vector quantization through any categorical estimator.

Instead of the nearest code, the code index is sampled from the softmax of negative squared distances,

    k ~ Cat(softmax(−‖z_e − e_j‖² / τ)),   z_q = e_k = one_hot(k) · E,

and the gradient through the sampling is left to a categorical estimator of this package (``gumbel_st``
by default; any estimator with the ``categorical`` latent kind), which sees logits −‖z_e − e_j‖²/τ and the
objective D ↦ f(D·E). As τ → 0 the sampled code is the nearest one. Unlike ``vq_st`` the gradient reaches
both z_e and the codebook through the distances. This is the relaxation used by Sønderby, Poole & Mnih 2017
("Continuous Relaxation Training of Discrete Latent Variable Image Models") and, with a learned variance,
by Takida et al. 2022 (SQ-VAE). It is biased or unbiased for the stochastic objective
E_k[f(e_k)] exactly when the inner estimator is; for the deterministic quantizer there is no true gradient.
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Estimator, EstimatorError, Objective, check_temperature
from estimators.codebook import Codebook
from estimators.gumbel_st import GumbelST


class StochasticVQ(Estimator):
    """Codes sampled from softmax(−‖z_e − e_k‖²/τ), differentiated by a wrapped categorical estimator."""

    latents = ("codebook",)
    unbiased = False

    def __init__(self, categorical: Estimator | None = None, tau: float = 1.0) -> None:
        super().__init__()
        categorical = GumbelST() if categorical is None else categorical
        if not isinstance(categorical, Estimator) or "categorical" not in categorical.latents:
            raise EstimatorError(
                f"vq_stochastic wraps an estimator for categorical latents (e.g. gumbel_st, st, reinmax, "
                f"score_function), got {categorical!r}. In a config give it as a node with its own _target_, "
                f"e.g. categorical: {{_target_: estimators.st.StraightThrough, tau: 1.0}}."
            )
        self.categorical = categorical
        self.tau = check_temperature(tau)
        # The wrapped estimator decides how many samples it needs (rloo needs two), and whether the estimate
        # is unbiased for the sampled objective (the class says False: the default wraps gumbel_st).
        self.min_samples = categorical.min_samples
        self.unbiased = categorical.unbiased

    def on_step(self, step: int) -> dict[str, float]:
        """Forwards the step to the wrapped estimator (a temperature schedule), prefixing what it reports."""
        reported = self.categorical.on_step(step) or {}
        return {f"categorical_{name}": value for name, value in reported.items()}

    def forward(self, params: Codebook, f: Objective, samples: int = 1) -> Tensor:
        self.check_samples(samples)
        logits = -params.squared_distances() / self.tau
        codebook = params.codebook
        return self.categorical(logits, lambda one_hot: f(one_hot @ codebook), samples)
