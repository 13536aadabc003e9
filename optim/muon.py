"""Muon (Jordan et al. 2024, "Muon: MomentUm Orthogonalized by Newton-Schulz") from ``pytorch_optimizer``,
with the split of the parameters that Muon needs made here, once.

Muon orthogonalizes the momentum of a 2-D weight matrix (five Newton-Schulz iterations) and steps along it;
it is defined for matrices only. Every other parameter (biases, norms' gains, scalars, and tensors of other
ranks) goes to AdamW, in a group of the same optimizer, at the **same learning rate** (so that one learning
rate is tuned and a schedule scales both groups alike). ``pytorch_optimizer.Muon`` takes the two groups
marked ``use_muon``; ``muon`` builds them from plain parameters, and ``split_text`` says which went where
(what a run records in its summary).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pytorch_optimizer import Muon
from torch import Tensor


def is_matrix(parameter: Tensor) -> bool:
    """Muon's parameters: the 2-D ones."""
    return parameter.ndim == 2


def muon(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    lr: float = 0.02,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: float = 0.0,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    adamw_eps: float = 1e-10,
    adamw_weight_decay: float = 0.0,
) -> Muon:
    """``pytorch_optimizer.Muon`` on the 2-D parameters, AdamW at the same ``lr`` on the others.

    ``params``: tensors, or groups (dicts with ``params``) whose other settings apply to both of their parts.
    """
    groups = []
    for group in params:
        group = dict(group) if isinstance(group, dict) else {"params": [group]}
        tensors = list(group.pop("params"))
        group.setdefault("lr", lr)
        groups.append(({**group, "use_muon": True}, [p for p in tensors if is_matrix(p)]))
        groups.append(({**group, "use_muon": False}, [p for p in tensors if not is_matrix(p)]))
    merged: list[dict[str, Any]] = []
    for settings, tensors in groups:  # one group per distinct setting (plain tensors share theirs)
        for existing in merged:
            if {k: v for k, v in existing.items() if k != "params"} == settings:
                existing["params"].extend(tensors)
                break
        else:
            merged.append({**settings, "params": list(tensors)})
    merged = [group for group in merged if group["params"]]
    for group in merged:
        if not group["use_muon"]:
            group.setdefault("betas", tuple(adamw_betas))
            group.setdefault("eps", adamw_eps)
            group.setdefault("weight_decay", adamw_weight_decay)
    return Muon(
        merged, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay
    )


def split_text(optimizer: Any) -> str | None:
    """Which parameters Muon steps and which AdamW does, e.g. ``muon: 4 matrices (12,288 numbers); adamw
    (lr 0.02): 4 other tensors (160 numbers)``; None for an optimizer without ``use_muon`` groups."""
    groups = getattr(optimizer, "param_groups", [])
    if not groups or not all("use_muon" in group for group in groups):
        return None
    parts = []
    for flag, name, noun in ((True, "muon", "matrices"), (False, "adamw", "other tensors")):
        tensors = [p for group in groups if group["use_muon"] is flag for p in group["params"]]
        rates = sorted({group["lr"] for group in groups if group["use_muon"] is flag})
        rate = "" if flag else f" (lr {', '.join(f'{r:g}' for r in rates)})"
        parts.append(f"{name}{rate}: {len(tensors)} {noun} ({sum(p.numel() for p in tensors):,} numbers)")
    return "; ".join(parts)
