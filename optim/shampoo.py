"""Shampoo with blocks (Gupta, Koren & Singer 2018; Anil et al. 2020, "Scalable Second Order Optimization
for Deep Learning"): ``pytorch_optimizer.ScalableShampoo``, with a state dict made of tensors.

Shampoo preconditions a weight matrix G (m × n) by L^(−1/4) G R^(−1/4), L and R the running sums of G Gᵀ
and Gᵀ G. The scalable variant splits every dimension longer than ``block_size`` into blocks, each with
its own preconditioners, so a 100,000 × 32 embedding table needs 196 blocks of 512 × 512 and 32 × 32
matrices rather than one 100,000 × 100,000 matrix; ``preconditioner_bytes`` counts what a parameter's
blocks take (checked against memory before a run builds them).

``pytorch_optimizer.ScalableShampoo`` keeps each parameter's statistics in Python objects
(``PreConditioner``, a graft), which ``torch.load(weights_only=True)`` refuses and which its
``load_state_dict`` would share with the saved dict rather than copy. ``BlockShampoo`` saves their tensors
instead and rebuilds the objects from them, so a checkpoint round trip gives the same next step bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_optimizer import ScalableShampoo
from pytorch_optimizer.optimizer.utils.graft import build_graft
from pytorch_optimizer.optimizer.utils.preconditioner import PreConditioner

GRAFT_TENSORS = ("momentum", "statistics")


class BlockShampoo(ScalableShampoo):
    """``ScalableShampoo`` whose ``state_dict`` holds tensors only (module docstring)."""

    def pre_conditioner(self, parameter: torch.Tensor, beta2: float) -> PreConditioner:
        """A parameter's preconditioner, as ``ScalableShampoo.init_group`` builds it."""
        return PreConditioner(
            parameter,
            beta2,
            self.inverse_exponent_override,
            self.block_size,
            self.skip_preconditioning_rank_lt,
            self.no_preconditioning_for_layers_with_dim_gt,
            self.shape_interpretation,
            self.pre_conditioner_type,
            self.matrix_eps,
            self.use_svd,
        )

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        state = {}
        for key, value in saved["state"].items():
            value = dict(value)  # Optimizer.state_dict hands out the live per-parameter dicts: copy
            if "pre_conditioner" in value:
                pre = value.pop("pre_conditioner")
                value["pre_conditioner"] = {
                    "statistics": pre.statistics,
                    "pre_conditioners": pre.pre_conditioners,
                }
            if "graft" in value:
                graft = value.pop("graft")
                value["graft"] = {
                    name: getattr(graft, name) for name in GRAFT_TENSORS if hasattr(graft, name)
                }
            state[key] = value
        return {**saved, "state": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            _, beta2 = group["betas"]
            for parameter in group["params"]:
                state = self.state.get(parameter)
                if not state or isinstance(state.get("pre_conditioner"), PreConditioner):
                    continue
                pre = self.pre_conditioner(parameter, beta2)
                saved = state["pre_conditioner"]
                pre.statistics = clone(saved["statistics"])
                pre.pre_conditioners = clone(saved["pre_conditioners"])
                graft = build_graft(parameter, self.graft_type, self.diagonal_eps)
                for name, tensor in state["graft"].items():
                    setattr(graft, name, tensor.clone())
                state["pre_conditioner"], state["graft"] = pre, graft


def clone(value: Any) -> Any:
    """A tensor or a list of tensors, copied (the loaded state dict's tensors stay the caller's)."""
    return value.clone() if isinstance(value, torch.Tensor) else [tensor.clone() for tensor in value]


def preconditioner_bytes(shape: tuple[int, ...], block_size: int, largest: int, dtype=torch.float32) -> int:
    """Bytes of the statistics and preconditioner matrices ``BlockShampoo`` keeps for one parameter of this
    shape (with its defaults for the rest), counted on the ``meta`` device without allocating them."""
    parameter = torch.empty(shape, device="meta", dtype=dtype)
    pre = PreConditioner(parameter, 0.999, 0, block_size, 1, largest, True, 0)
    tensors = [pre.statistics, pre.pre_conditioners]
    flat = [t for item in tensors for t in ([item] if isinstance(item, torch.Tensor) else item)]
    return sum(t.numel() * t.element_size() for t in flat)
