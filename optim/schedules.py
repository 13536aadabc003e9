"""Learning-rate schedules: linear warmup, then constant, cosine or linear decay to zero.

One multiplier of the learning rate each optimizer was given, as a function of the steps already taken
e = 0, 1, …, ``steps`` − 1 (the step about to be taken is e + 1), with W = ``warmup_steps``:

    warmup (e < W):   (e + 1) / W
    then, with p = (e − W) / (steps − W) ∈ [0, 1):
        constant      1
        cosine        (1 + cos(π p)) / 2          (Loshchilov & Hutter 2017, without restarts)
        linear        1 − p

``scheduler`` applies it to every parameter group through ``torch.optim.lr_scheduler.LambdaLR`` (torch's
scheduler: its ``state_dict`` saves the step count, and a restored run continues the schedule exactly);
the training loop calls its ``step()`` after every optimizer step. AlgoPerf's NAdamW baseline uses
warmup and cosine decay. Schedule-Free optimizers (Defazio et al. 2024) replace the decay by their averaging:
they take a warmup only (``decays``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "cosine", "linear")


def check_schedule(schedule: str, warmup_steps: int, steps: int) -> None:
    """``ValueError`` naming the argument for an unknown schedule or a warmup that does not fit the run."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; the schedules are {', '.join(SCHEDULES)}.")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a whole number >= 0, got {warmup_steps!r}.")
    if warmup_steps >= steps and schedule != "constant":
        raise ValueError(
            f"warmup_steps={warmup_steps} leaves no step of the {schedule} decay in a run of {steps} steps."
        )


def decays(schedule: str) -> bool:
    """Whether the schedule lowers the learning rate after its warmup."""
    return schedule != "constant"


@dataclass(frozen=True)
class Multiplier:
    """The schedule's multiplier of the learning rate after ``taken`` steps (module docstring)."""

    schedule: str
    steps: int
    warmup_steps: int = 0

    def __call__(self, taken: int) -> float:
        if taken < self.warmup_steps:
            return (taken + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (taken - self.warmup_steps) / (self.steps - self.warmup_steps))
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress


def scheduler(optimizer: Optimizer, schedule: str, steps: int, warmup_steps: int = 0) -> LambdaLR:
    """The schedule over ``steps`` training steps as torch's ``LambdaLR`` on ``optimizer`` (checked first)."""
    check_schedule(schedule, warmup_steps, steps)
    multiplier = Multiplier(schedule, steps, warmup_steps)
    # A function, not the object: LambdaLR's state_dict then holds its step count alone, and the schedule
    # comes from the run's settings when it is restored.
    return LambdaLR(optimizer, lambda taken: multiplier(taken))
