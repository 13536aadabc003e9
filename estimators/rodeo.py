"""RODEO for Bernoulli latents (Shi, Zhou, Hwang, Titsias & Mackey 2022, "Gradient Estimation with Discrete
Stein Operators", NeurIPS; the authors' code ``thjashin/rodeo``, ``networks.py``, gradient type
``discrete_stein_avg``).

A Bernoulli variable is a categorical with C = 2 classes here (as for ``disarm``): logits (..., 2), log-odds
η = logits₁ − logits₀, θ = σ(η) = q(b = 1). RLOO on S samples b₁ … b_S of the D variables f couples (one data
point), with two control variates built from a discrete Stein operator, which has mean zero under q for any
function h:

    (A h)(b) = (1/D) Σ_i q(b̄ⁱ_i) · (h(b̄ⁱ) − h(b)),      b̄ⁱ: b with variable i flipped,

the Gibbs operator of q scaled by 1/D (the code's ``w1 = θ(1 − b) + (1 − θ)b`` = q(b̄ⁱ_i) and
``w2 = q(b_i) − 1``; its mean over the D neighbours). The functions h come from a small network
g_φ: R² → R², read at a first-order Taylor model of f built from the other samples (so that h does not
depend on the sample it is applied to):

    f_lin,k(y) = (1/(S−1)) Σ_{j≠k} ∇f(b_j)ᵀ(y − b_j),      f̄_k = (1/(S−1)) Σ_{j≠k} f(b_j),
    h_k(y) = g_φ(f_lin,k(y), f̄_k)                        (``control_nn``, two outputs h¹, h²),

and the estimate (the code's ``eta_grads``)

    ĝ_η = (1/S) Σ_k [ (f(b_k) − (1/(S−1)) Σ_{j≠k} (f(b_j) + α·(A h¹_j)(b_j)))·(b_k − θ)
                      + β·(A [h²_k·(· − θ)])(b_k) ],

(b − θ = ∇_η log q(b)), unbiased for every α, β and φ: given b_k, each Stein term is the operator applied to
a function fixed by the other samples (tested against the exact gradient). α, β (starting at 0: RODEO starts
as RLOO) and φ are the estimator's own parameters, trained on the variance objective
(``estimators.base.variance_backward``: ‖ĝ‖², as the code's ``mean(eta_grads²)``) with Adam at 1e-3 (the
code's ``hyper_lr`` and ``control_lr``). The network is the code's ``SteinControlNNSingleLayer``: one dense
layer of 100 units on each input, summed, LeakyReLU(0.3), a dense layer to 2 outputs (Glorot-uniform weights,
zero biases, as Keras initializes them), initialized from ``seed``.

Where this follows the code rather than the paper: the 1/D scaling of the operator, the leave-one-out Taylor
model (the "avg" variant the authors run at two samples) and its inputs held fixed in the variance
objective. For S > 2 the authors run another variant (``discrete_stein_output_avg``, not implemented); here
the same construction is used with leave-one-out means (at S = 2 the code's sum over the other samples of
∇f(b_j)ᵀb_j is the same number).

Cost: S evaluations of f and one backward pass through f for ∇f(b_k) (f must be differentiable in its input,
as a decoder is). The samples are b_k = 1[U < θ], U the numbers of class 1 in the stream ``uniform`` (common
random numbers). The estimate enters as a coefficient, (η − sg[η])·ĝ_η, zero in value; f's own parameters
(a decoder) get the pathwise ∇f at the samples. The gradient of f inside an estimate is taken with
``torch.autograd.grad``, which ``torch.func.vmap`` cannot batch: probes use the per-draw loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from estimators.base import Estimator, EstimatorError, Noise, Objective, coupled_shape, noise_stream

HIDDEN = 100  # units of the control network's layers (SteinControlNNSingleLayer)
SLOPE = 0.3  # LeakyReLU's negative slope


class SteinControlNetwork(nn.Module):
    """g_φ(x, z) = W₂·LeakyReLU(W_x x + b_x + W_z z + b_z) + b₂: R² → R², elementwise over leading shapes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        self.input_x, self.input_z = nn.Linear(1, HIDDEN), nn.Linear(1, HIDDEN)
        self.output = nn.Linear(HIDDEN, 2)
        for layer in (self.input_x, self.input_z, self.output):
            bound = math.sqrt(6 / (layer.in_features + layer.out_features))  # Glorot uniform, as Keras' Dense
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.zero_()

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """g_φ at inputs x and z of shapes that broadcast together (z once per data point for its D
        neighbours), shape (*broadcast, 2)."""
        dtype = self.output.weight.dtype  # computed in the network's dtype, returned in the input's
        hidden = self.input_x(x.unsqueeze(-1).to(dtype)) + self.input_z(z.unsqueeze(-1).to(dtype))
        return self.output(nn.functional.leaky_relu(hidden, SLOPE)).to(x.dtype)


def leave_one_out(values: Tensor) -> Tensor:
    """The mean over the other samples (dimension 0) of each sample's: (Σ_j v_j − v_k)/(S − 1)."""
    return (values.sum(0, keepdim=True) - values) / (values.shape[0] - 1)


class RODEO(Estimator):
    """RODEO: RLOO with discrete-Stein-operator control variates from a network of a leave-one-out Taylor
    model of f; unbiased; Bernoulli (two-class) latents; S ≥ 2 evaluations of f and one backward pass."""

    latents = ("categorical",)
    unbiased = True
    min_samples = 2
    vectorizable = False
    vectorizable_reason = "RODEO takes the gradient of f at its samples inside an estimate (autograd.grad)"

    def __init__(self, seed: int = 0, optimizer: Callable[..., torch.optim.Optimizer] | None = None) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))
        self.beta = nn.Parameter(torch.zeros(()))
        self.network = SteinControlNetwork(seed)
        self.optimizer = optimizer

    def forward(self, logits: Tensor, f: Objective, samples: int = 2, noise: Noise | None = None) -> Tensor:
        """``noise``: pre-drawn noise (``estimators.base.draw_noise``); b = 1[U < θ] with U the stream
        ``uniform``'s numbers of class 1."""
        self.check_samples(samples)
        if logits.dim() == 0 or logits.shape[-1] != 2:
            raise EstimatorError(
                f"RODEO is for Bernoulli latents, given as two-class logits of shape (..., 2); got logits of "
                f"shape {tuple(logits.shape)}. For more than two classes use e.g. rloo or leg."
            )
        log_odds = logits[..., 1] - logits[..., 0]  # η
        probability = torch.sigmoid(log_odds.detach())  # θ
        uniform = noise_stream(noise, "uniform", (samples, *logits.shape), logits)[..., 1]
        bits = (uniform < probability).to(logits.dtype)  # b_k, (S, *B)
        point = torch.stack([1 - bits, bits], dim=-1).requires_grad_(True)
        values = f(point)  # (S, *B[:k])
        coupled = coupled_shape(values, log_odds.shape, point.shape)
        if values.requires_grad:
            (slope,) = torch.autograd.grad(values.sum(), point, retain_graph=True, allow_unused=True)
        else:
            slope = None
        slope = torch.zeros_like(point) if slope is None else slope
        kept = values.dim() - 1
        variables = math.prod(coupled)

        def per_point(tensor: Tensor) -> Tensor:  # (…, *B) → (…, *B[:k], D)
            return tensor.reshape(*tensor.shape[: tensor.dim() - len(coupled)], variables)

        b = per_point(bits)  # (S, *Bk, D)
        theta = per_point(probability)  # (*Bk, D)
        gradient = per_point(slope[..., 1] - slope[..., 0])  # ∇_b f(b_k): f at (1 − b, b)
        f_b = values.detach()  # (S, *Bk)
        others_gradient = leave_one_out(gradient)  # (S, *Bk, D)
        others_offset = leave_one_out((gradient * b).sum(-1))  # mean_{j≠k} ∇f(b_j)ᵀb_j
        others_value = leave_one_out(f_b)  # f̄_k
        at_sample = (others_gradient * b).sum(-1) - others_offset  # f_lin,k(b_k), (S, *Bk)
        flip = 1 - 2 * b  # b̄ⁱ − b at coordinate i
        at_neighbours = at_sample.unsqueeze(-1) + others_gradient * flip  # f_lin,k(b̄ⁱ_k), (S, *Bk, D)
        h_neighbours = self.network(at_neighbours, others_value.unsqueeze(-1))  # (S, *Bk, D, 2)
        h_sample = self.network(at_sample, others_value)  # (S, *Bk, 2)
        score = b - theta  # ∇_η log q(b)
        weight = theta * (1 - b) + (1 - theta) * b  # q(b̄ⁱ_i)
        stay = theta * b + (1 - theta) * (1 - b) - 1.0  # q(b_i) − 1
        # (A h¹)(b_k): the mean over the D neighbours of w1·h¹(b̄ⁱ) + w2·h¹(b)
        first = (weight * h_neighbours[..., 0] + stay * h_sample[..., :1]).mean(-1)  # (S, *Bk)
        # (A [h²·(· − θ)])(b_k), coordinate j: the mean over i of w1_i h²(b̄ⁱ)(b̄ⁱ − θ)_j + w2_i h²(b)(b − θ)_j,
        # where (b̄ⁱ − θ)_j is (b − θ)_j except at j = i, where it is (1 − b_j − θ_j).
        weighted = weight * h_neighbours[..., 1]  # (S, *Bk, D)
        second = (
            score * weighted.sum(-1, keepdim=True)
            + weighted * flip
            + score * h_sample[..., 1:] * stay.sum(-1, keepdim=True)
        ) / variables
        baseline = leave_one_out(f_b + self.alpha * first)
        estimate = ((f_b - baseline).unsqueeze(-1) * score + self.beta * second).mean(0)  # ĝ_η, (*Bk, D)
        correction = (log_odds - log_odds.detach()) * estimate.reshape(log_odds.shape)
        if coupled:  # f's value depends on all of its coupled variables together
            correction = correction.sum(dim=tuple(range(kept, log_odds.dim())))
        return values.mean(0) + correction
