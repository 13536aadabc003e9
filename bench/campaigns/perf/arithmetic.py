"""How far a computation is from the arithmetic limit: its FLOPs, and the time its own matrix products take.

``count`` runs a function once under ``torch.utils.flop_counter.FlopCounterMode`` and keeps, besides the
total FLOPs (matrix products and convolutions, as torch counts them), every matrix product it performed:
operation, operand shapes and dtype, as the dispatcher saw them, so inside ``torch.func.vmap`` the batched
products the draws really run. ``matmul_seconds`` times each of those products alone on fresh operands
(``torch.utils.benchmark.Timer``, which synchronizes a GPU) and adds them up: the time the computation would
take if it did nothing but its matrix products at the rate this machine reaches at those sizes, measured in
the same run as the computation. The achieved fraction of that rate is

    (FLOPs / the computation's time) / (matrix-product FLOPs / their time alone)

and 1 would mean that everything other than the products (elementwise work, copies, Python, vmap's
bookkeeping) cost nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode, flop_registry

aten = torch.ops.aten
# The matrix products the counter knows, and how to run one alone: (operation, operand positions).
PRODUCTS = {aten.mm: ("mm", (0, 1)), aten.addmm: ("mm", (1, 2)), aten.bmm: ("bmm", (0, 1))}
PRODUCTS[aten.baddbmm] = ("bmm", (1, 2))

Product = tuple[str, tuple[int, ...], tuple[int, ...], torch.dtype, str]  # kind, shapes, dtype, device


@dataclass
class Arithmetic:
    """What ``count`` saw: the FLOPs and, per distinct matrix product, how often it ran."""

    flops: int = 0
    products: Counter[Product] = field(default_factory=Counter)

    @property
    def product_flops(self) -> int:
        return sum(count * product_flops(product) for product, count in self.products.items())


def product_flops(product: Product) -> int:
    kind, first, second, _, _ = product
    if kind == "mm":
        return 2 * first[0] * first[1] * second[1]
    return 2 * first[0] * first[1] * first[2] * second[2]


class NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, which attributes FLOPs to modules by hooking their
    backward with ``register_multi_grad_hook``; inside ``torch.func.grad`` those hooks raise. Only the total
    is needed here, which the counter keeps under "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self) -> NoModuleTracking:
        return self

    def __exit__(self, *exception: Any) -> None:
        return None


def count(function: Callable[[], Any]) -> Arithmetic:
    """Run ``function`` once and count its FLOPs and matrix products (``Arithmetic``)."""
    seen = Arithmetic()

    def recorder(packet: Any) -> Callable[..., int]:
        kind, (first, second) = PRODUCTS[packet]
        formula = flop_registry[packet]

        def recorded(*arguments: Any, out_val: Any = None, **keywords: Any) -> int:
            left, right = arguments[first], arguments[second]
            device = str(left.device)
            seen.products[(kind, tuple(left.shape), tuple(right.shape), left.dtype, device)] += 1
            return formula(*arguments, out_val=out_val, **keywords)

        recorded._get_raw = True  # type: ignore[attr-defined]  # the counter passes tensors, not shapes
        return recorded

    counter = FlopCounterMode(display=False, custom_mapping={packet: recorder(packet) for packet in PRODUCTS})
    counter.mod_tracker = NoModuleTracking()
    with counter:
        function()
    seen.flops = int(counter.get_total_flops())
    return seen


def matmul_seconds(arithmetic: Arithmetic, min_run_time: float = 0.1) -> float:
    """The time the computation's matrix products take alone: each distinct product timed on fresh random
    operands (the median of ``Timer.blocked_autorange``), times how often it ran, summed."""
    total = 0.0
    for product, times in arithmetic.products.items():
        kind, first, second, dtype, device = product
        generator = torch.Generator(device=device).manual_seed(0)
        operands = {
            "left": torch.randn(first, dtype=dtype, device=device, generator=generator),
            "right": torch.randn(second, dtype=dtype, device=device, generator=generator),
        }
        timer = Timer(
            f"torch.{kind}(left, right)",
            globals={"torch": torch, **operands},
            num_threads=torch.get_num_threads(),
        )
        total += times * timer.blocked_autorange(min_run_time=min_run_time).median
    return total


def limit_fields(arithmetic: Arithmetic, seconds: float, min_run_time: float = 0.1) -> dict[str, Any]:
    """The record of a computation that took ``seconds``: FLOPs, achieved rate, the matrix products' own rate
    at its sizes (timed now, ``min_run_time`` seconds each) and the fraction of it achieved (None without
    matrix products)."""
    flops = arithmetic.flops
    fields: dict[str, Any] = {"flops": flops, "achieved_gflops": flops / seconds / 1e9 if seconds else None}
    if not arithmetic.products:
        return {**fields, "matmul_s": None, "matmul_gflops": None, "matmul_fraction": None}
    alone = matmul_seconds(arithmetic, min_run_time)
    rate = arithmetic.product_flops / alone
    return {
        **fields,
        "matmul_s": alone,
        "matmul_gflops": rate / 1e9,
        "matmul_fraction": flops / seconds / rate if seconds else None,
    }
