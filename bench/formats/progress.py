"""Progress of long work, as lines on stderr: ``[report] reading runs: 120 of 400 (12 s; about 28 s left)``.

Lines rather than a redrawn bar, so that they read the same in a terminal, a log file and a SLURM job's
output. ``Progress(prefix, what, total)``: ``advance()`` after each item prints a line for the first item,
then at most one every ``every_s`` seconds, and always for the last, with the time so far and an estimate of
the time left from the mean time per item. ``duration`` writes seconds as ``45 s``, ``3 min 20 s``,
``2 h 5 min``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 5 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def time_left(elapsed: float, done: int, total: int) -> float | None:
    """The time the ``total - done`` items left take at the mean pace so far; None before the first."""
    return None if done <= 0 else elapsed / done * max(0, total - done)


class Progress:
    """``k of N`` lines for one piece of long work (module docstring)."""

    def __init__(
        self,
        prefix: str,
        what: str,
        total: int,
        every_s: float = 5.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix, self.what, self.total, self.every_s = prefix, what, int(total), every_s
        self.stream, self.clock = stream, clock
        self.started = clock()
        self.shown_at: float | None = None
        self.done = 0

    def line(self, label: str = "") -> str:
        elapsed = self.clock() - self.started
        left = time_left(elapsed, self.done, self.total)
        timing = duration(elapsed) + (
            "" if left is None or self.done >= self.total else f"; about {duration(left)} left"
        )
        which = f" ({label})" if label else ""
        return f"{self.prefix} {self.what}: {self.done} of {self.total}{which} ({timing})"

    def advance(self, label: str = "") -> None:
        """One more item done (``label``: which, shown in the line)."""
        self.done += 1
        now = self.clock()
        due = self.shown_at is None or now - self.shown_at >= self.every_s or self.done >= self.total
        if due:
            self.shown_at = now
            print(self.line(label), file=self.stream or sys.stderr, flush=True)
