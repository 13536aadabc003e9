"""Lookahead (Zhang, Lucas, Hinton, Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back").

Lookahead wraps any inner optimizer A (SGD, Adam, ...). It keeps a copy φ of the parameters, the *slow
weights*, and lets A move the *fast weights* θ for k steps; then it pulls the slow weights part of the way
towards where the fast weights went and restarts the fast weights from there (Algorithm 1 of the paper):

    θ_{t,0} ← φ_{t−1}
    θ_{t,i} ← θ_{t,i−1} + A(L, θ_{t,i−1}, d),   i = 1..k          (k inner steps)
    φ_t     ← φ_{t−1} + α (θ_{t,k} − φ_{t−1})                     (slow update)
    θ_{t+1,0} ← φ_t                                               (fast weights reset)

Defaults k = 5, α = 0.5 (the paper's). The inner optimizer's own state (momentum, Adam's moments) is kept
across slow updates by default (``inner_state="keep"``, the paper's default "maintain" choice, §3/App.
D.1); ``inner_state="reset"`` clears it at every slow update.

``Lookahead`` is a real ``torch.optim.Optimizer``: its ``param_groups`` ARE the inner optimizer's (the same
list), so LR schedulers and code that reads or writes ``param_groups[i]["lr"]`` reach the inner optimizer;
``add_param_group`` adds to both; ``state_dict()`` holds the inner state, the slow weights and the step
counter; ``slow_weights()`` is a context manager that evaluates the model at the slow weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

INNER_STATES = ("keep", "reset")


class Lookahead(Optimizer):
    """Lookahead around an inner optimizer.

    Args:
        inner: the inner optimizer, either an instance already built on the parameters (then ``params``
            must be ``None``) or a callable that builds one from ``params``: an optimizer class or a
            ``functools.partial`` of one (what Hydra's ``_partial_: true`` gives).
        params: the parameters (or parameter groups), when ``inner`` is a callable.
        k: inner steps per slow update, an integer ≥ 1 (k = 1 with α = 1 is the inner optimizer alone).
        alpha: slow step size α ∈ (0, 1].
        inner_state: ``"keep"`` the inner optimizer's state across slow updates, or ``"reset"`` it.

    Raises ``ValueError`` with a message naming the argument for invalid ``k``, ``alpha``, ``inner_state``
    or ``inner``.
    """

    def __init__(
        self,
        inner: Optimizer | Callable[..., Optimizer],
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | None = None,
        k: int = 5,
        alpha: float = 0.5,
        inner_state: str = "keep",
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(
                f"Lookahead: k (inner steps per slow update) must be an integer >= 1, got k={k!r}."
            )
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead: alpha (slow step size) must be in (0, 1], got alpha={alpha!r}.")
        if inner_state not in INNER_STATES:
            raise ValueError(
                f"Lookahead: inner_state must be one of {', '.join(INNER_STATES)}, "
                f"got inner_state={inner_state!r}."
            )
        if isinstance(inner, Optimizer):
            if params is not None:
                raise ValueError(
                    "Lookahead: inner is an optimizer already built on its parameters; "
                    "do not pass params too."
                )
        elif callable(inner):
            if params is None:
                raise ValueError(
                    "Lookahead: inner is a callable that builds the inner optimizer; pass params."
                )
            inner = inner(params)
            if not isinstance(inner, Optimizer):
                raise ValueError(
                    f"Lookahead: inner must build a torch.optim.Optimizer, got {type(inner).__name__}."
                )
        else:
            raise ValueError(
                f"Lookahead: inner must be a torch.optim.Optimizer or a callable building one from "
                f"params, got {type(inner).__name__}."
            )
        self.inner = inner
        self.k, self.alpha, self.inner_state = k, float(alpha), inner_state
        # Number of inner steps taken; a slow update happens when it reaches a multiple of k.
        self.inner_steps = 0
        self.missing_slow = True  # some parameter has no slow weights yet (set again by add_param_group)
        super().__init__(inner.param_groups, dict(inner.defaults))
        # Share the very list (and dicts) of the inner optimizer, so a change to either is seen by both.
        self.param_groups = inner.param_groups
        self.defaults = inner.defaults

    def __getstate__(self) -> dict[str, Any]:
        # Optimizer.__getstate__ keeps defaults, state and param_groups; a copy needs the inner optimizer too.
        return {
            **super().__getstate__(),
            "inner": self.inner,
            "k": self.k,
            "alpha": self.alpha,
            "inner_state": self.inner_state,
            "inner_steps": self.inner_steps,
            "missing_slow": self.missing_slow,
        }

    def __repr__(self) -> str:
        return (
            f"Lookahead(k={self.k}, alpha={self.alpha}, inner_state={self.inner_state}, inner={self.inner!r})"
        )

    def parameters(self) -> Iterator[Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Called by Optimizer.__init__ with the inner optimizer's own groups: those are there already.
        if not hasattr(self, "inner") or any(param_group is group for group in self.inner.param_groups):
            return
        self.inner.add_param_group(param_group)
        self.missing_slow = True  # the new parameters' slow weights start at their values at the next step

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One inner step; every k-th one is followed by the slow update and the reset of the fast weights."""
        if self.missing_slow:  # φ_0 = θ_0: the parameters' values at their first step
            for parameter in self.parameters():
                state = self.state[parameter]
                if "slow" not in state:
                    state["slow"] = parameter.detach().clone()
            self.missing_slow = False
        if closure is None:
            loss = self.inner.step()
        else:
            with torch.enable_grad():
                loss = self.inner.step(closure)
        self.inner_steps += 1
        if self.inner_steps % self.k == 0:
            self.synchronize()
        return loss

    @torch.no_grad()
    def synchronize(self) -> None:
        """The slow update φ ← φ + α(θ − φ), then θ ← φ (and the inner state reset, if asked)."""
        parameters = list(self.parameters())
        slows = [self.state[parameter]["slow"] for parameter in parameters]
        # One fused kernel per list instead of three small operations per tensor: Lookahead's cost on top of
        # the inner optimizer stays small for models with many small parameters.
        torch._foreach_lerp_(slows, parameters, self.alpha)  # φ + α(θ − φ)
        torch._foreach_copy_(parameters, slows)
        if self.inner_state == "reset":
            self.inner.state = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @contextmanager
    def slow_weights(self) -> Iterator[None]:
        """Within the block the parameters hold the slow weights φ; the fast weights come back after.

        Use it to evaluate the model Lookahead is converging to (the paper reports the slow weights).
        Parameters that have not taken a step yet have no slow weights and are left as they are.
        """
        swapped = []
        with torch.no_grad():
            for parameter in self.parameters():
                slow = self.state[parameter].get("slow")
                if slow is not None:
                    swapped.append((parameter, parameter.detach().clone()))
                    parameter.copy_(slow)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, fast in swapped:
                    parameter.copy_(fast)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict, the slow weights (``param_groups`` order), the step count."""
        return {
            "inner": self.inner.state_dict(),
            "slow": [self.state[parameter].get("slow") for parameter in self.parameters()],
            "inner_steps": self.inner_steps,
            "k": self.k,
            "alpha": self.alpha,
            "inner_state": self.inner_state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``: the inner state, the slow weights and the step count (k, α come along)."""
        missing = {"inner", "slow", "inner_steps"} - set(state_dict)
        if missing:
            raise ValueError(f"Lookahead: not a Lookahead state dict, missing {', '.join(sorted(missing))}.")
        parameters = list(self.parameters())
        if len(state_dict["slow"]) != len(parameters):
            raise ValueError(
                f"Lookahead: the state dict has slow weights for {len(state_dict['slow'])} parameters, this "
                f"optimizer has {len(parameters)}."
            )
        self.inner.load_state_dict(state_dict["inner"])
        # Optimizer.load_state_dict builds new group dicts: share them again.
        self.param_groups = self.inner.param_groups
        self.state = defaultdict(dict)
        for parameter, slow in zip(parameters, state_dict["slow"], strict=True):
            if slow is not None:
                if slow.shape != parameter.shape:
                    raise ValueError(
                        f"Lookahead: slow weights of shape {tuple(slow.shape)} do not fit a parameter of "
                        f"shape {tuple(parameter.shape)}."
                    )
                self.state[parameter]["slow"] = slow.detach().to(parameter).clone()
        self.inner_steps = int(state_dict["inner_steps"])
        self.missing_slow = True
        self.k = int(state_dict.get("k", self.k))
        self.alpha = float(state_dict.get("alpha", self.alpha))
        self.inner_state = state_dict.get("inner_state", self.inner_state)
