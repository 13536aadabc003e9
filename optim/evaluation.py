"""Where a model is evaluated when its optimizer computes gradients at other weights than the ones it
converges to.

- **Lookahead** (``optim.lookahead``): the inner optimizer moves the fast weights θ; the slow weights φ are
  what Lookahead converges to, and what Zhang et al. 2019 report.
- **Schedule-Free** (Defazio et al. 2024, ``pytorch_optimizer.ScheduleFreeAdamW``): the gradient is taken at
  y = (1 − β₁) z + β₁ x, an interpolation of the base iterate z and the average x; x is the point to
  evaluate. The parameters hold y while training; the optimizer's ``eval()`` puts x = (y − (1 − β₁) z)/β₁
  in them.
- **Lookahead around Schedule-Free**: Lookahead's slow weights are a slow copy of Schedule-Free's
  training point y, and Schedule-Free's z is not touched by Lookahead's slow update. The evaluation point
  is Schedule-Free's average taken at Lookahead's slow weights, x(φ) = (φ − (1 − β₁) z)/β₁: right after a
  slow update, where y = φ, it is exactly the point Schedule-Free alone would evaluate, and between slow
  updates it is the one Lookahead would return to with the current z.

``evaluation_weights(optimizer)`` is a context manager that puts those weights in the parameters and
restores the training weights bit for bit on leaving (by copy, not by the inverse interpolation, which
would round): gradient probes and training steps outside the block see the weights the gradient is
computed at. Checkpoints hold the training weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch


def is_schedule_free(optimizer: Any) -> bool:
    """A Schedule-Free optimizer: ``eval()``/``train()`` and ``train_mode`` in its groups."""
    groups = getattr(optimizer, "param_groups", [])
    return (
        callable(getattr(optimizer, "eval", None))
        and callable(getattr(optimizer, "train", None))
        and bool(groups)
        and all("train_mode" in group for group in groups)
    )


def chain(optimizer: Any) -> list[Any]:
    """The optimizer and the ones it wraps (Lookahead's ``inner``), outermost first."""
    found = [optimizer]
    while getattr(found[-1], "inner", None) is not None:
        found.append(found[-1].inner)
    return found


@contextmanager
def schedule_free_average(optimizer: Any) -> Iterator[None]:
    """Within the block the parameters hold Schedule-Free's average x; the training point y comes back
    after."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    with torch.no_grad():
        kept = [p.detach().clone() for p in parameters]
    optimizer.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(parameters, kept)
        for group in optimizer.param_groups:  # back in training mode, without train()'s interpolation
            group["train_mode"] = True


@contextmanager
def evaluation_weights(optimizer: Any) -> Iterator[None]:
    """The weights to evaluate at (module docstring): Lookahead's slow weights, then Schedule-Free's average
    of what the parameters hold; the parameters as they are for any other optimizer."""
    with ExitStack() as stack:
        for link in chain(optimizer):
            slow_weights = getattr(link, "slow_weights", None)
            if callable(slow_weights):
                stack.enter_context(slow_weights())
            elif is_schedule_free(link):
                stack.enter_context(schedule_free_average(link))
        yield
