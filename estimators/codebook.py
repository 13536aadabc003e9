"""Vector quantization: the ``codebook`` latent kind, its losses, the EMA codebook and usage statistics.

A vector quantizer (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning")
replaces each encoder output z_e ∈ R^d by its nearest code

    k* = argmin_k ‖z_e − e_k‖²,   z_q = e_{k*},

from a codebook e_1..e_K. The map z_e ↦ z_q is piecewise constant, so the decoder's loss has no useful
gradient with respect to z_e: a VQ "gradient estimator" decides what flows back instead
(``estimators.vq_st``, ``estimators.vq_rotation``, ``estimators.vq_stochastic``). None of them has a true
gradient to be compared with.

The codebook itself is trained by one of two rules, both here so that they can be used without the
benchmark:

- the codebook and commitment losses (van den Oord et al. 2017, eq. 3),
  ‖sg[z_e] − e_{k*}‖² + β‖z_e − sg[e_{k*}]‖², with β = 0.25 in the paper: ``vq_losses``;
- exponential moving averages (van den Oord et al. 2017, appendix A.1; Razavi et al. 2019, "Generating
  Diverse High-Fidelity Images with VQ-VAE-2"), which replace the codebook loss: ``EMACodebook``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from estimators.base import EstimatorError


class CodebookFields(NamedTuple):
    z_e: Tensor
    codebook: Tensor


class Codebook(CodebookFields):
    """Parameters of a vector quantizer; the ``codebook`` latent kind.

    ``z_e`` holds the encoder outputs, shape ``(*B, d)``; ``codebook`` the K codes, shape ``(K, d)``. A
    ``NamedTuple`` (so that ``torch.func`` and pytree utilities see its two tensors), checked when built.
    """

    __slots__ = ()

    def __new__(cls, z_e: Tensor, codebook: Tensor) -> Codebook:
        if codebook.dim() != 2 or z_e.dim() < 1 or z_e.shape[-1] != codebook.shape[-1]:
            raise EstimatorError(
                f"A codebook latent needs z_e of shape (*batch, d) and a codebook of shape (K, d); got z_e "
                f"{tuple(z_e.shape)} and codebook {tuple(codebook.shape)}."
            )
        return super().__new__(cls, z_e, codebook)

    def squared_distances(self) -> Tensor:
        """‖z_e − e_k‖² for every code, shape ``(*B, K)``."""
        return squared_distances(self.z_e, self.codebook)

    def nearest(self) -> Tensor:
        """Index of the nearest code, shape ``(*B,)``; computed without gradient (argmin has none)."""
        with torch.no_grad():
            return self.squared_distances().argmin(-1)


def squared_distances(z_e: Tensor, codebook: Tensor) -> Tensor:
    """‖z_e − e_k‖² = ‖z_e‖² − 2⟨z_e, e_k⟩ + ‖e_k‖², shape ``(*B, K)``, clamped at 0 against round-off."""
    cross = z_e @ codebook.T
    return ((z_e**2).sum(-1, keepdim=True) - 2 * cross + (codebook**2).sum(-1)).clamp_min(0.0)


def vq_losses(params: Codebook, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The codebook loss ‖sg[z_e] − e_k‖² and the commitment loss ‖z_e − sg[e_k]‖², each of shape ``(*B,)``.

    ``index`` defaults to the nearest code. The training loss adds codebook + β·commitment (β = 0.25 in van
    den Oord et al. 2017); with an EMA codebook only β·commitment.
    """
    index = params.nearest() if index is None else index
    code = params.codebook[index]
    codebook_loss = ((params.z_e.detach() - code) ** 2).sum(-1)
    commitment_loss = ((params.z_e - code.detach()) ** 2).sum(-1)
    return codebook_loss, commitment_loss


def check_unit_interval(name: str, value: float, closed_low: bool = True) -> float:
    value = float(value)
    low_ok = value >= 0 if closed_low else value > 0
    if not (low_ok and value < 1):
        raise EstimatorError(f"{name} must be in {'[' if closed_low else '('}0, 1), got {name}={value}.")
    return value


class EMACodebook(nn.Module):
    """A codebook trained by exponential moving averages instead of a loss (van den Oord et al. 2017, A.1).

    For every code k, with n_k the number of encoder outputs assigned to it in a batch and s_k their sum:

        N_k ← γ N_k + (1 − γ) n_k
        m_k ← γ m_k + (1 − γ) s_k
        e_k = m_k / Ñ_k,   Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j

    γ is ``decay``; Ñ is N with Laplace smoothing (Razavi et al. 2019; as in Sonnet's VectorQuantizerEMA),
    so that a code with N_k → 0 does not divide by zero. The state starts at N_k = 1, m_k = e_k (as if each
    code had been assigned once, to itself), so e = m/N holds from the first step and a code that is never
    assigned is not blown up by a zero-initialised average. It does not stay put for ever: its N and m both
    shrink by γ per step, but the smoothing adds ε to N, so once γᵗ falls below about ε the code decays
    towards the origin (with γ = 0.99, ε = 1e-5: after roughly ln ε / ln γ ≈ 1150 steps), as in Sonnet. Such
    a code is dead either way; ``code_usage`` counts it.
    """

    def __init__(self, codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.decay = check_unit_interval("decay", decay)
        if not epsilon > 0:
            raise EstimatorError(f"epsilon must be > 0 (Laplace smoothing of the counts), got {epsilon}.")
        self.epsilon = float(epsilon)
        self.register_buffer("codebook", torch.empty(codes, dim))
        self.register_buffer("counts", torch.ones(codes))
        self.register_buffer("sums", torch.empty(codes, dim))

    def reset(self, codebook: Tensor) -> None:
        """Start the averages at ``codebook``: N_k = 1, m_k = e_k."""
        with torch.no_grad():
            self.codebook.copy_(codebook)
            self.sums.copy_(codebook)
            self.counts.fill_(1.0)

    @torch.no_grad()
    def update(self, z_e: Tensor, index: Tensor) -> None:
        """One EMA step from encoder outputs ``z_e`` (``(*B, d)``) assigned to codes ``index`` (``(*B,)``)."""
        z_e = z_e.detach().reshape(-1, z_e.shape[-1])
        index = index.reshape(-1)
        codes = self.codebook.shape[0]
        assigned = torch.zeros(codes, dtype=z_e.dtype, device=z_e.device).index_add_(
            0, index, torch.ones_like(index, dtype=z_e.dtype)
        )
        sums = torch.zeros_like(self.sums).index_add_(0, index, z_e)
        self.counts.mul_(self.decay).add_(assigned, alpha=1 - self.decay)
        self.sums.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.counts.sum()
        smoothed = (self.counts + self.epsilon) / (total + codes * self.epsilon) * total
        self.codebook.copy_(self.sums / smoothed.unsqueeze(-1))


def code_usage(index: Tensor, codes: int) -> dict[str, float]:
    """Usage statistics of code assignments ``index`` over a codebook of ``codes`` entries.

    ``perplexity`` = exp(−Σ_k p_k log p_k) with p_k the fraction of assignments to code k (K when every
    code is used equally, 1 when one code takes everything); ``codes_used`` = fraction of codes assigned at
    least once; ``unused_codes`` = their complement as a count.
    """
    counts = torch.bincount(index.reshape(-1), minlength=codes).double()
    probabilities = counts / counts.sum()
    nonzero = probabilities[probabilities > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    used = int((counts > 0).sum())
    return {"perplexity": math.exp(entropy), "codes_used": used / codes, "unused_codes": float(codes - used)}
