"""Timing helpers: one comparison's record, paired timing, the machine and its load.

A comparison times a *baseline* and a *candidate* doing the same work, alternating their order from one
repeat to the next, so that a change of load on the machine hits both alike; its result is the median of
the per-repeat ratios with its 95% bootstrap interval and the verdict that interval supports
(``bench.campaigns.perf.verdicts``), repeated until the interval is narrow or a time cap is reached. The
machine and the load average are recorded beside it, because timings taken while other processes load the
cores are slower and noisier.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.campaigns.perf.verdicts import StoppingRule, ratio_interval, repeat_until, verdict, within


@dataclass
class Result:
    """One comparison: candidate vs baseline, timed once each per repeat (seconds).

    ``kind`` is ``speedup`` (baseline time / candidate time, the goal a lower bound) or ``ratio`` (candidate
    time / baseline time, the goal an upper bound). ``goal`` is None for a measurement given for
    information. ``status`` is ``error`` when the measurement failed; ``note`` then says why. ``stopped``
    says why the repeats stopped (``verdicts.repeat_until``); ``arithmetic`` holds, for a computation whose
    FLOPs were counted, its distance to the arithmetic limit (``bench.campaigns.perf.arithmetic``).
    """

    name: str
    what: str
    baseline: str
    candidate: str
    kind: str
    goal: float | None = None
    baseline_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    status: str = "ok"
    note: str = ""
    stopped: str = ""
    arithmetic: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> bool:
        return self.kind == "speedup"

    @property
    def ratios(self) -> list[float]:
        pairs = zip(self.baseline_s, self.candidate_s, strict=True)
        if self.speedup:
            return [baseline / candidate for baseline, candidate in pairs]
        return [candidate / baseline for baseline, candidate in pairs]

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% bootstrap interval of the median ratio over the paired repeats (None below 2)."""
        if self.status != "ok":
            return None
        return ratio_interval(self.baseline_s, self.candidate_s, self.speedup)

    def narrow(self, half_width: float) -> bool:
        """Whether the interval lies within ±``half_width`` of the ratio (a failed one counts as narrow: more
        repeats cannot mend it)."""
        if self.status != "ok":
            return True
        return self.ratio is not None and within(self.ratio, self.interval, half_width)

    @property
    def verdict(self) -> str | None:
        """``met``, ``missed`` or ``undecided`` against the goal (``verdicts.verdict``); None without one."""
        return verdict(self.interval, self.goal, self.speedup) if self.status == "ok" else None

    @property
    def goal_met(self) -> bool | None:
        """True when met, False when missed, None when undecided or without a goal."""
        return {"met": True, "missed": False}.get(self.verdict or "")

    def record(self) -> dict[str, Any]:
        """Everything measured, plus the derived ratios, as a JSON-ready dict (``results/perf.json``)."""
        ratios = self.ratios
        interval = self.interval
        return {
            **asdict(self),
            "goal": None if self.goal is None else ("≥ " if self.speedup else "≤ ") + f"{self.goal:g}×",
            "goal_value": self.goal,
            "repeats": len(ratios),
            "ratios": ratios,
            "ratio_median": self.ratio,
            "ratio_interval": list(interval) if interval else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "baseline_median_s": statistics.median(self.baseline_s) if self.baseline_s else None,
            "candidate_median_s": statistics.median(self.candidate_s) if self.candidate_s else None,
            "verdict": self.verdict,
            "goal_met": self.goal_met,
        }


def timed(function: Callable[[], Any], synchronize: Callable[[], None] | None = None) -> float:
    """Wall time of one call, seconds; with ``synchronize`` (``bench.run.device.synchronizer``), from a device
    with nothing queued to the end of the work the call queued on it (a GPU returns before it computes)."""
    if synchronize is not None:
        synchronize()
    started = time.perf_counter()
    function()
    if synchronize is not None:
        synchronize()
    return time.perf_counter() - started


def paired(
    result: Result, rule: StoppingRule, baseline: Callable[[], float], candidate: Callable[[], float]
) -> Result:
    """Time baseline and candidate once per repeat, in one process, alternating which goes first, for as many
    repeats as ``rule`` says.

    Each callable returns the seconds it measured; they are appended to ``result``, which is returned.
    """

    def one_repeat(repeat: int) -> None:
        if repeat % 2 == 0:
            result.baseline_s.append(baseline())
            result.candidate_s.append(candidate())
        else:
            result.candidate_s.append(candidate())
            result.baseline_s.append(baseline())

    repeat_group([result], one_repeat, rule)
    return result


def repeat_group(results: Sequence[Result], one_repeat: Callable[[int], None], rule: StoppingRule) -> None:
    """Repeat a measurement that fills several results at once (``one_repeat(index)`` appends one time pair
    to each) until every result's interval is narrow, or the rule's cap; each result records why it
    stopped."""
    _, reason = repeat_until(
        one_repeat, lambda half_width: all(result.narrow(half_width) for result in results), rule
    )
    for result in results:
        result.stopped = reason


def machine(device: torch.device | None = None) -> dict[str, Any]:
    """The CPU, the cores this process may use, the memory, torch's threads, the software versions, and the
    device measured on with its name."""
    from bench.run.device import device_name
    from bench.run.sweep import available_cores

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores_available": available_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": str(device or torch.device("cpu")),
        "device_name": device_name(device or torch.device("cpu")),
    }


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the system does not report them)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
