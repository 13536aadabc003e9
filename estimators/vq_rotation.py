"""The rotation trick for vector quantization (Fifty et al. 2024, "Restructuring Vector Quantization with the
Rotation Trick", §4).

Forward: the nearest code e_k, as for ``vq_st``. Backward: through a rotation and rescaling that takes z_e
to e_k, both treated as constants:

    z_q = sg[λ R] z_e,   λ = ‖e_k‖ / ‖z_e‖,
    R = I − 2 r rᵀ + 2 q̂ êᵀ,   ê = z_e/‖z_e‖,  q̂ = e_k/‖e_k‖,  r = (ê + q̂)/‖ê + q̂‖,

so that R ê = q̂ and λ R z_e = e_k, and the gradient reaching the encoder is

    ∂L/∂z_e = λ Rᵀ ∂L/∂z_q = λ (g − 2 r (rᵀg) + 2 ê (q̂ᵀg)),   g = ∂L/∂z_q.

R is the rotation in the plane of ê and q̂ (a product of two Householder reflections, §4.2), applied
without forming a d×d matrix. Compared with straight-through (∂L/∂z_e = g), the angle between the gradient
and z_e is preserved relative to e_k, and the gradient is scaled by λ. When z_e ∥ e_k with equal norm the
map is the identity and the estimator equals ``vq_st``. Norms are clamped at a tiny value so that z_e = 0
stays finite; if z_e and e_k point in exactly opposite directions r is undefined, and the formula with
r = 0 (still mapping z_e to e_k) is used. No true gradient exists (see ``vq_st``); ``samples`` is ignored
beyond being >= 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import Estimator, Objective
from estimators.codebook import Codebook


def rotate_to(z_e: Tensor, target: Tensor) -> Tensor:
    """sg[λ R] z_e: equals ``target`` in value (up to round-off), with gradient λ Rᵀ g to ``z_e``."""
    tiny = torch.finfo(z_e.dtype).tiny ** 0.5
    source_norm = z_e.detach().norm(dim=-1, keepdim=True).clamp_min(tiny)
    target_norm = target.detach().norm(dim=-1, keepdim=True).clamp_min(tiny)
    source_unit = z_e.detach() / source_norm
    target_unit = target.detach() / target_norm
    middle = source_unit + target_unit
    reflection = middle / middle.norm(dim=-1, keepdim=True).clamp_min(tiny)
    rotated = (
        z_e
        - 2 * reflection * (reflection * z_e).sum(-1, keepdim=True)
        + 2 * target_unit * (source_unit * z_e).sum(-1, keepdim=True)
    )
    return (target_norm / source_norm) * rotated


class VQRotation(Estimator):
    """Nearest code forward; backward through the rotation and rescaling taking z_e to e_k (Fifty et al.)."""

    latents = ("codebook",)
    unbiased = False

    def forward(self, params: Codebook, f: Objective, samples: int = 1) -> Tensor:
        self.check_samples(samples)
        code = params.codebook[params.nearest()].detach()
        rotated = rotate_to(params.z_e, code)
        # λ R z_e equals e_k up to round-off; add the (constant) remainder so that f sees e_k exactly.
        z_q = rotated + (code - rotated).detach()
        return f(z_q.unsqueeze(0)).mean(0)
