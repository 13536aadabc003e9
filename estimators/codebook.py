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
  Diverse High-Fidelity Images with VQ-VAE-2"), which replace the codebook loss: ``EMACodebook``;
- a frozen random codebook E times a learned linear map, trained by the same losses (SimVQ, Zhu et al.
  2024): ``LinearCodebook``.

Finite scalar quantization (Mentzer et al. 2024) needs no learned codebook: each of d' coordinates is
bounded and rounded to one of L_i levels, so the codes are the fixed grid of Π_i L_i points, and the
nearest code is the rounding itself: ``FiniteScalarQuantizer``. Both are ways of parameterizing the
codebook; how the gradient crosses the quantizer is still the estimator's (straight-through, in both
papers).
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


class LinearCodebook(nn.Module):
    """SimVQ's codebook (Zhu, Zhang, Li, Wang, Chen, Li & Liu 2024, "Addressing Representation Collapse in
    Vector Quantized Models with One Linear Layer"; code ``youngsheen/SimVQ``, ``quantize.py``):

        C = E Wᵀ + b,    E ∈ R^{K×d} frozen, drawn from N(0, 1/d) (the code's ``nn.init.normal_(std=d^-½)``),

    W, b a learned linear layer (``nn.Linear(d, d)``, torch's default initialization, as the code). The
    codebook and commitment losses are those of a plain codebook, ‖sg[z_e] − C_k‖² + β‖z_e − sg[C_k]‖²
    (the code's non-legacy ``commit_loss``), so the codebook loss trains W and b: every code moves with
    every update of the shared map, which is how SimVQ keeps codes from dying. E and the layer are drawn from
    torch's global generator (a run's seed fixes them).
    """

    def __init__(self, codes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("basis", torch.randn(codes, dim) * dim**-0.5)
        self.linear = nn.Linear(dim, dim)

    def forward(self) -> Tensor:
        """The codebook C, shape (K, d)."""
        return self.linear(self.basis)


class FiniteScalarQuantizer(nn.Module):
    """Finite scalar quantization (Mentzer, Minnen, Agustsson & Tschannen 2024, "Finite Scalar Quantization:
    VQ-VAE Made Simple", ICLR; their reference code, ``fsq.ipynb``, followed step by step):

        bound(z)_i = tanh(z_i + s_i)·h_i − o_i,   h_i = (L_i − 1)(1 − ε)/2,  o_i = ½ for even L_i else 0,
                     s_i = tan(o_i/h_i),  ε = 1e-3,
        ẑ_i = round(bound(z)_i) / ⌊L_i/2⌋                 (a grid point, renormalized to about [−1, 1]),

    so each coordinate takes exactly L_i values and z ↦ ẑ has Π_i L_i codes (the implied codebook,
    ``codebook``). The rounding of bound(z)/⌊L/2⌋ to the nearest grid point is the nearest code in the
    implied codebook, which is how the ``codebook`` latent kind's estimators see FSQ (``vq_st`` then is FSQ's
    straight-through rounding). The reference code uses tan where atanh would centre bound(0) exactly at 0
    (other implementations, e.g. ``vector-quantize-pytorch``, use atanh and (1 + ε)); we follow the paper's
    code. ``index`` numbers the codes in mixed radix (the code's ``codes_to_indexes``).
    """

    def __init__(self, levels: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or any(level < 2 for level in levels):
            raise EstimatorError(
                f"finite scalar quantization needs one or more levels, each >= 2 (e.g. [8, 5, 5, 5]), got "
                f"{levels}."
            )
        self.levels = tuple(levels)
        level = torch.tensor(levels, dtype=torch.float64)
        half = (level - 1) * (1 - 1e-3) / 2
        offset = torch.where(level % 2 == 1, 0.0, 0.5)
        self.register_buffer("half_range", half.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", torch.tan(offset / half).float(), persistent=False)
        self.register_buffer("width", (level // 2).float(), persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.tensor([1, *levels[:-1]]), 0), persistent=False)

    @property
    def codes(self) -> int:
        return math.prod(self.levels)

    def bound(self, z: Tensor) -> Tensor:
        """The coordinates bounded to the range whose rounding has L_i values and renormalized by ⌊L_i/2⌋:
        what the implied codebook quantizes."""
        return (torch.tanh(z + self.shift) * self.half_range - self.offset) / self.width

    def codebook(self) -> Tensor:
        """Every grid point (Π_i L_i, d'), in the order of ``index``."""
        numbers = torch.arange(self.codes, device=self.basis.device)
        digits = (numbers.unsqueeze(-1) // self.basis) % torch.tensor(self.levels, device=numbers.device)
        return (digits - self.width.to(torch.long)).to(self.half_range.dtype) / self.width

    def index(self, code: Tensor) -> Tensor:
        """The number of each grid point ``code`` (..., d') in ``codebook``."""
        digits = torch.round(code * self.width + self.width).to(torch.long)
        return (digits * self.basis).sum(-1)
