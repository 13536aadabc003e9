"""Local expectation gradients (Titsias & Lázaro-Gredilla 2015, "Local Expectation Gradients for Black Box
Variational Inference", NeurIPS).

For a factorized categorical q_θ(z) = Π_l Cat(z_l; softmax(θ_l)) the gradient of L(θ) = E_q[f(z)] with
respect to the logits θ_l of one variable needs only that variable's distribution:

    ∇_{θ_l} L = E_{z_{−l} ~ q}[ Σ_c ∇_{θ_l} q_l(c) · f(z_{−l}, z_l = c) ],

so for every sample z ~ q and every latent variable l the sum over its C values is done exactly, the other
variables kept at their sampled values. With S samples, L variables coupled by f (those of one data point)
and C classes,

    ĝ_{θ_l} = 1/S Σ_s Σ_c ∇_{θ_l} q_l(c) · (f(z⁽ˢ⁾_{−l}, c) − b_{s,l}),  b_{s,l} = Σ_c q_l(c) f(z⁽ˢ⁾_{−l}, c),

unbiased (the baseline b_{s,l} does not change the sum, as Σ_c ∇q_l(c) = 0; it only keeps the terms small).
For a separable f(z) = Σ_l f_l(z_l) every term f_j(z_j), j ≠ l, cancels and ĝ is the exact gradient.
The evaluation at c = z_l is f(z) itself, shared by all l: each sample costs 1 + L·(C − 1) evaluations of f
(``f_evaluations``), the C − 1 others of each variable reached by shifting its sampled class by
1, …, C − 1 (mod C), so that every shape is fixed and the estimator runs under ``torch.func.vmap``.

Parameters f depends on directly (a decoder) get the pathwise ∇f(z) at the S samples; the surrogate's value
is the mean of f over them, and the L·(C − 1) further evaluations run without a graph, in one call of f on
S·L·(C − 1) copies of z: memory S·L²·C·(C − 1) numbers per data point.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from estimators.base import Estimator, EstimatorError, Objective, coupled_shape, gumbel_noise, one_hot_like
from estimators.exact import Exact


class LocalExpectation(Estimator):
    """Local expectation gradients: each variable's C values summed exactly, the others sampled; unbiased.

    S·(1 + L·(C − 1)) evaluations of f per estimate, L the variables f couples for one data point.
    """

    latents = ("categorical",)
    unbiased = True

    def f_evaluations(self, logits: Tensor, f: Objective, samples: int) -> int:
        """S·(1 + L·(C − 1)): f at each sample, and at each of the C − 1 other classes of each variable."""
        _, coupled = Exact.coupled(logits, f)
        return samples * (1 + math.prod(coupled) * (logits.shape[-1] - 1))

    def forward(self, logits: Tensor, f: Objective, samples: int = 1) -> Tensor:
        self.check_samples(samples)
        if not isinstance(logits, Tensor) or logits.dim() == 0:
            raise EstimatorError(
                f"local expectation gradients are for categorical latents, given as logits of shape "
                f"(..., C); got {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}."
            )
        classes = logits.shape[-1]
        batch_shape = logits.shape[:-1]
        expanded = logits.detach().expand(samples, *logits.shape)
        index = (expanded + gumbel_noise(expanded.shape, logits)).argmax(-1)  # (S, *B): z ~ q (Gumbel-max)
        z = one_hot_like(index, expanded)
        values = f(z)  # (S, *B[:k])
        coupled = coupled_shape(values, batch_shape, z.shape)
        kept = values.dim() - 1  # f keeps batch_shape[:kept] and couples the rest
        variables = math.prod(coupled)

        # Class index_l + k (mod C) for the shifts k = 0 … C − 1: shift 0 is the sample itself.
        shifts = torch.arange(classes, device=logits.device).reshape(classes, *[1] * index.dim())
        rotated = (index.unsqueeze(0) + shifts) % classes  # (C, S, *B)
        replacements = one_hot_like(rotated[1:], expanded.expand(classes - 1, *expanded.shape))
        replacements = replacements.reshape(classes - 1, samples, *batch_shape[:kept], variables, classes)
        # Evaluation (l, k) replaces coupled variable l by its class shifted by k; the leading dimensions are
        # independent data points, so one evaluation replaces variable l in all of them at once. The copies
        # of z have shape (L, C−1, S, *B[:k], L, C); their diagonal over the two L dimensions is replaced.
        perturbed = z.reshape(samples, *batch_shape[:kept], variables, classes)
        perturbed = perturbed.expand(variables, classes - 1, *perturbed.shape).clone()
        perturbed.diagonal(dim1=0, dim2=3 + kept).copy_(replacements.movedim(-2, -1))
        with torch.no_grad():
            outcomes = f(perturbed.reshape(-1, *logits.shape))  # (L·(C−1)·S, *B[:k])
        # (L, C−1, S, *B[:k]) -> (S, *B[:k], L, C−1) -> (S, *B, C−1): variable l's values sit at l.
        outcomes = outcomes.reshape(variables, classes - 1, *values.shape).movedim(0, -1).movedim(0, -1)
        outcomes = outcomes.reshape(samples, *batch_shape, classes - 1)
        sampled = values.detach().reshape(*values.shape, *[1] * len(coupled), 1)
        local = torch.cat([sampled.expand(samples, *batch_shape, 1), outcomes], dim=-1)  # (S, *B, C), by k

        probabilities = torch.softmax(logits, -1).expand(samples, *logits.shape)
        probabilities = probabilities.gather(-1, rotated.movedim(0, -1))  # q_l(index_l + k), (S, *B, C)
        baseline = (probabilities.detach() * local).sum(-1, keepdim=True)
        correction = ((probabilities - probabilities.detach()) * (local - baseline)).sum(-1)  # (S, *B)
        if coupled:  # f's value depends on all of its coupled variables together
            correction = correction.sum(dim=tuple(range(1 + kept, 1 + len(batch_shape))))
        return (values + correction).mean(0)
