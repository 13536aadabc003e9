"""Lazy Adam: Adam that leaves the rows of a parameter that got no gradient alone, moments included.

An embedding table E (rows = tokens) gets a gradient only in the rows of the tokens in the batch. Adam
(Kingma & Ba 2015) still decays the moments of every other row, m ← β₁m, v ← β₂v, and moves those rows by
−lr·m̂/(√v̂ + ε): a row keeps drifting for tens of steps after its token was last seen, and every step costs
O(rows × dim). Lazy Adam (TensorFlow's ``LazyAdam``; the "LazyOptimizer" of Su Jianlin's 2019 post on
Lookahead and LazyOptimizer) applies Adam's update to the rows that got a gradient and leaves the others
exactly as they were, parameters and both moments:

    for each touched row r:  m_r ← β₁ m_r + (1 − β₁) g_r,  v_r ← β₂ v_r + (1 − β₂) g_r²,  θ_r ← θ_r − Δ_r
    for each untouched row:  nothing

A row is *touched* when its gradient row has a non-zero entry (dense gradients, e.g. an ordinary
``nn.Embedding``) or when it is present in the gradient's indices (sparse gradients,
``nn.Embedding(sparse=True)``; like ``torch.optim.SparseAdam``, a present row counts as touched even if its
values happen to be zero). Rows are slices along dimension 0. The step count t used for the bias
corrections is the parameter's (it counts every step at which the parameter had a gradient), as in
``torch.optim.SparseAdam`` and TensorFlow's LazyAdam, not a per-row count.

The eps convention — where ε enters — is a parameter, ``eps_placement``, because the two torch optimizers
we compare with differ there, and a comparison must not mix that difference with laziness. With
m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ):

- ``"adam"`` (default): θ ← θ − lr · m̂ / (√v̂ + ε). ``torch.optim.Adam`` (torch 2.x ``_single_tensor_adam``:
  ``denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)``), Algorithm 1 of Kingma & Ba.
- ``"sparse_adam"``: θ ← θ − lr · √(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε), i.e. ε is added to the *uncorrected*
  √v; equivalently ε_effective = ε / √(1 − β₂ᵗ) added to √v̂. ``torch.optim.SparseAdam``
  (``torch/optim/_functional.py::sparse_adam``: ``denom = exp_avg_sq.sqrt().add_(eps)``, ``step_size = lr *
  sqrt(bias_correction2) / bias_correction1``), TensorFlow's Adam/LazyAdam ("epsilon hat"), and the
  "more efficient order of computation" at the end of §2 of Kingma & Ba. Early in training
  (1 − β₂ᵗ small) its effective ε is much larger: ×31.6 at t = 1 with β₂ = 0.999.

Which parameters are lazy is set per parameter group with ``lazy``:

- ``"embedding"`` (default): 2-D parameters. That is what an embedding table looks like to an optimizer;
  a linear layer's weight is 2-D too, but its gradient row is all zero only for an output unit that got no
  gradient at all, which is then left alone. To be exact, build the groups with ``lazy_param_groups(model)``
  (weights of ``nn.Embedding``/``nn.EmbeddingBag`` lazy, everything else not), or pass your own groups.
- ``True`` / ``"all"``: every parameter with at least one dimension (rows along dimension 0).
- ``False`` / ``"none"``: plain Adam (with the chosen eps convention) — a sparse gradient is made dense,
  so this is "dense Adam on a sparse-gradient embedding" and, with ``eps_placement="adam"``, equals
  ``torch.optim.Adam``.

``weight_decay`` adds λθ to the gradient (Adam's L2 form) of the touched rows only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

EPS_PLACEMENTS = ("adam", "sparse_adam")
LAZY_RULES = ("embedding", "all", "none")


def lazy_rule(value: Any) -> str:
    """``lazy`` as one of ``embedding``, ``all``, ``none`` (booleans accepted: True = all, False = none)."""
    if isinstance(value, bool):
        return "all" if value else "none"
    if value not in LAZY_RULES:
        raise ValueError(
            f"LazyAdam: lazy must be one of {', '.join(LAZY_RULES)}, True or False, got lazy={value!r}."
        )
    return value


def lazy_param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Groups for ``LazyAdam``: weights of ``nn.Embedding``/``nn.EmbeddingBag`` lazy, the rest not."""
    embedding_ids = {
        id(sub.weight) for sub in module.modules() if isinstance(sub, (nn.Embedding, nn.EmbeddingBag))
    }
    parameters = list(module.parameters())
    groups = [
        {"params": [p for p in parameters if id(p) in embedding_ids], "lazy": True},
        {"params": [p for p in parameters if id(p) not in embedding_ids], "lazy": False},
    ]
    return [group for group in groups if group["params"]]


class LazyAdam(Optimizer):
    """Adam on the rows that got a gradient; untouched rows and their moments stay bit-identical.

    Args:
        params: parameters or parameter groups (a group may set any of the options below).
        lr: learning rate (> 0).
        betas: (β₁, β₂), each in [0, 1).
        eps: ε > 0; where it enters is ``eps_placement``.
        weight_decay: L2 coefficient λ ≥ 0, added to the gradient of touched rows.
        eps_placement: ``"adam"`` (as ``torch.optim.Adam``) or ``"sparse_adam"`` (as
            ``torch.optim.SparseAdam``); see the module docstring.
        lazy: ``"embedding"`` (2-D parameters), ``"all"``/``True``, ``"none"``/``False``.

    Invalid values raise ``ValueError`` naming the argument.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        eps_placement: str = "adam",
        lazy: bool | str = "embedding",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            eps_placement=eps_placement,
            lazy=lazy,
        )
        check_options(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        check_options(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rule = lazy_rule(group["lazy"])
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["step"] += 1
                lazy = parameter.dim() >= 1 and (
                    rule == "all" or (rule == "embedding" and parameter.dim() == 2)
                )
                grad = parameter.grad
                if lazy:
                    self.lazy_update(parameter, grad, state, group)
                else:
                    dense = grad.to_dense() if grad.is_sparse else grad
                    adam_update(parameter, dense, state["exp_avg"], state["exp_avg_sq"], state["step"], group)
        return loss

    @staticmethod
    def lazy_update(parameter: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        rows = parameter.shape[0]
        if grad.is_sparse and grad.sparse_dim() == 1:
            grad = grad.coalesce()  # the update is non-linear in g: one entry per row
            index, values = grad.indices()[0], grad.values()
        else:
            # Dense gradient (or an element-wise sparse one): a row is touched when any entry is non-zero.
            dense = grad.to_dense() if grad.is_sparse else grad
            index = dense.reshape(rows, -1).ne(0).any(dim=1).nonzero().squeeze(1)
            values = dense.index_select(0, index)
        if index.numel() == 0:
            return
        # Gather the touched rows, update them as Adam would, and write them back; nothing else is written.
        rows_parameter = parameter.index_select(0, index)
        exp_avg = state["exp_avg"].index_select(0, index)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, index)
        adam_update(rows_parameter, values, exp_avg, exp_avg_sq, state["step"], group)
        parameter.index_copy_(0, index, rows_parameter)
        state["exp_avg"].index_copy_(0, index, exp_avg)
        state["exp_avg_sq"].index_copy_(0, index, exp_avg_sq)


def adam_update(
    parameter: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, group: dict[str, Any]
) -> None:
    """One Adam update of ``parameter`` and its moments in place, with the group's eps convention.

    The operations follow ``torch.optim.Adam``'s single-tensor path (and ``SparseAdam``'s for
    ``eps_placement="sparse_adam"``) so that results agree to rounding.
    """
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    if weight_decay != 0:
        grad = grad.add(parameter, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    if group["eps_placement"] == "adam":
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        parameter.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
    else:
        denom = exp_avg_sq.sqrt().add_(eps)
        step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        parameter.add_(exp_avg.div(denom).mul_(-step_size))


def check_options(options: dict[str, Any]) -> None:
    """Validate one parameter group's options; ``ValueError`` names the offending one."""
    lr, eps, weight_decay = options["lr"], options["eps"], options["weight_decay"]
    betas = options["betas"]
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"LazyAdam: lr must be a number > 0, got lr={lr!r}.")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"LazyAdam: eps must be a number > 0, got eps={eps!r}.")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"LazyAdam: weight_decay must be >= 0, got weight_decay={weight_decay!r}.")
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ValueError(f"LazyAdam: betas must be two numbers in [0, 1), got betas={tuple(betas)!r}.")
    if options["eps_placement"] not in EPS_PLACEMENTS:
        raise ValueError(
            f"LazyAdam: eps_placement must be one of {', '.join(EPS_PLACEMENTS)} (where eps enters the "
            f"denominator, see optim/lazy.py), got eps_placement={options['eps_placement']!r}."
        )
    lazy_rule(options["lazy"])
