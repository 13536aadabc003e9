"""VQ straight-through estimator (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
Learning", §3.2).

Forward: the nearest code z_q = e_k, k = argmin_j ‖z_e − e_j‖². Backward: the gradient ∂L/∂z_q is copied to
z_e unchanged,

    z_q = z_e + sg[e_k − z_e],   so   ∂L/∂z_e = ∂L/∂z_q,

and nothing flows to the codebook through f: the codebook learns from the codebook loss or from EMA updates
(``estimators.codebook``). The quantizer has no true gradient, so "biased or not" has no meaning here; the
estimator is a heuristic. The quantizer is deterministic: ``samples`` only has to be >= 1, and f is
evaluated once.
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Estimator, Objective
from estimators.codebook import Codebook


class VQStraightThrough(Estimator):
    """Nearest code forward, identity backward to z_e (van den Oord et al. 2017)."""

    latents = ("codebook",)
    unbiased = False

    def forward(self, params: Codebook, f: Objective, samples: int = 1) -> Tensor:
        self.check_samples(samples)
        code = params.codebook[params.nearest()]
        z_q = params.z_e + (code - params.z_e).detach()
        return f(z_q.unsqueeze(0)).mean(0)
