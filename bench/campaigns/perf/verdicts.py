"""How many repeats a comparison needs, its ratio's 95% interval, and the verdict that interval supports.

A comparison times a baseline and a candidate back to back, once per *repeat*; a repeat's ratio is theirs
(baseline/candidate for a speedup, candidate/baseline otherwise), and the comparison's ratio is the median of
the repeats' ratios. Its 95% interval is a percentile bootstrap of that median over the paired repeats
(``scipy.stats.bootstrap`` with ``paired=True``: a resample draws whole repeats, baseline and candidate
together, so a load spike that slowed both stays one repeat), from a fixed seed, so the same times always give
the same interval.

``repeat_until`` repeats a measurement (``StoppingRule``) at least ``least`` times, then until every ratio's
interval lies within ±``half_width`` of its ratio, or ``most`` repeats, or a time cap. Stopping on the
interval's width (never on the verdict) keeps the rule from fishing for a side of the goal; the verdict:

- ``met``: the whole interval is on the goal's side (above a speedup's goal, below a ratio's bound);
- ``missed``: the whole interval is on the other side;
- ``undecided``: the interval contains the goal, said with the interval, because the repeats cannot tell.

A comparison without a goal (given for information) has no verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 4000
SEED = 0

MET, MISSED, UNDECIDED = "met", "missed", "undecided"


@dataclass(frozen=True)
class StoppingRule:
    """Repeat at least ``least`` times, then until every interval is within ±``half_width`` of its ratio, or
    ``most`` repeats, or ``time_cap_s`` seconds since the first repeat began (a repeat under way finishes)."""

    least: int = 6
    most: int = 60
    time_cap_s: float = 60.0
    half_width: float = 0.10

    def __post_init__(self) -> None:
        if not 1 <= self.least <= self.most:
            raise ValueError(f"need 1 <= least <= most repeats, got least={self.least}, most={self.most}")
        if self.time_cap_s <= 0 or not 0 < self.half_width < 1:
            raise ValueError(
                f"need a positive time cap and 0 < half_width < 1, got {self.time_cap_s}, {self.half_width}"
            )

    @classmethod
    def fixed(cls, repeats: int) -> StoppingRule:
        """Exactly ``repeats`` repeats, whatever the intervals (``--repeats N``, ``--quick``)."""
        return cls(least=repeats, most=repeats, time_cap_s=float("inf"))


def median_ratio(baseline: np.ndarray, candidate: np.ndarray, speedup: bool, axis: int = -1) -> np.ndarray:
    ratios = baseline / candidate if speedup else candidate / baseline
    return np.median(ratios, axis=axis)


def ratio_interval(
    baseline_s: Sequence[float], candidate_s: Sequence[float], speedup: bool
) -> tuple[float, float] | None:
    """The 95% percentile-bootstrap interval of the median ratio over paired repeats; None below 2 repeats."""
    if len(baseline_s) < 2:
        return None
    baseline, candidate = np.asarray(baseline_s, dtype=float), np.asarray(candidate_s, dtype=float)
    ratios = baseline / candidate if speedup else candidate / baseline
    if np.ptp(ratios) == 0:  # every repeat gave the same ratio: the bootstrap has nothing to resample
        return float(ratios[0]), float(ratios[0])
    result = stats.bootstrap(
        (baseline, candidate),
        lambda first, second, axis: median_ratio(first, second, speedup, axis),
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def within(ratio: float, interval: tuple[float, float] | None, half_width: float) -> bool:
    """Whether the interval lies within ±``half_width`` of the ratio (a relative width)."""
    if interval is None:
        return False
    low, high = interval
    return low >= ratio * (1 - half_width) and high <= ratio * (1 + half_width)


def verdict(interval: tuple[float, float] | None, goal: float | None, speedup: bool) -> str | None:
    """``met``, ``missed`` or ``undecided`` for a goal (a speedup's lower bound, a ratio's upper bound); None
    without a goal or an interval."""
    if goal is None or interval is None:
        return None
    low, high = interval
    if speedup:
        return MET if low >= goal else MISSED if high < goal else UNDECIDED
    return MET if high <= goal else MISSED if low > goal else UNDECIDED


def repeat_until(
    one_repeat: Callable[[int], None],
    narrow_enough: Callable[[float], bool],
    rule: StoppingRule,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, str]:
    """Call ``one_repeat(index)`` as ``rule`` says; ``narrow_enough(half_width)`` tells whether every interval
    of the measurement is narrow enough yet. Returns the repeats made and why they stopped."""
    started = clock()
    repeats = 0
    while True:
        one_repeat(repeats)
        repeats += 1
        if repeats < rule.least:
            continue
        if rule.least == rule.most:
            return repeats, f"{repeats} repeats, as asked"
        if narrow_enough(rule.half_width):
            return repeats, f"every interval within ±{rule.half_width:.0%} after {repeats} repeats"
        if repeats >= rule.most:
            wider = f"an interval is wider than ±{rule.half_width:.0%}"
            return repeats, f"{repeats} repeats, the most allowed; {wider}"
        if clock() - started >= rule.time_cap_s:
            return repeats, (
                f"time cap of {rule.time_cap_s:.0f} s reached after {repeats} repeats; an interval is wider "
                f"than ±{rule.half_width:.0%}"
            )
