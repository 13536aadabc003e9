"""Stop signals during a run: SIGTERM, SIGUSR1/2, SIGINT and submitit's preemption signal end a run at the
next step boundary, after a checkpoint (``bench.run.checkpoint.Checkpoints.after_step``).

``StopSignals`` installs the handlers and hands the signal over to the handler that was there before (e.g.
submitit's, which requeues the job); ``Interrupted`` is what ends the run.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


class Interrupted(BaseException):
    """A stop signal ended the run; a BaseException, like KeyboardInterrupt (``except Exception`` lets it by).

    ``signal_number``: the signal; ``step``: the last step that finished; ``checkpoint``: the checkpoint
    saved at that step (None when none was saved: the signal came a second time, or before training).
    """

    def __init__(self, signal_number: int, step: int | None = None, checkpoint: Path | None = None) -> None:
        super().__init__(signal_number, step, checkpoint)
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint
        self.raised: BaseException | None = None  # what the previous handler raised, when it was handed over

    @property
    def name(self) -> str:
        return signal.Signals(self.signal_number).name


def stop_signal_numbers(environment: dict[str, str] | None = None) -> list[int]:
    """SIGTERM, SIGUSR1, SIGUSR2, SIGINT and the signal named in ``SUBMITIT_PREEMPT_SIGNAL`` (``USR2``)."""
    environment = os.environ if environment is None else environment
    numbers = [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT]
    named = environment.get("SUBMITIT_PREEMPT_SIGNAL", "").strip().upper()
    if named:
        number = getattr(signal, named if named.startswith("SIG") else f"SIG{named}", None)
        if isinstance(number, signal.Signals) and number not in numbers:
            numbers.append(number)
    return [int(number) for number in numbers]


class StopSignals:
    """Stop signals during a run: the first one is acted on at the next step boundary, a second at once.

    ``install()`` replaces the handlers of ``stop_signal_numbers()`` (a signal the process ignores stays
    ignored; outside the main thread nothing is installed); the handler records the signal in
    ``requested``, which ``Checkpoints.after_step`` reads at the end of every step: it saves a checkpoint
    and calls ``stop``. Where a Python handler was installed before ours (submitit's; Python's own SIGINT
    handler), ``stop`` has the run record itself as interrupted (``on_stop``) and then calls that handler
    as the signal would have: submitit's requeues the job and exits, Python's raises KeyboardInterrupt, and
    one that returns (submitit ignores SIGTERM) lets training go on. Without one, ``stop`` raises
    ``Interrupted``: the run records itself and exits with 128 + the signal number (``hand_over``).
    ``restore()`` puts the previous handlers back.
    """

    def __init__(self, numbers: Iterable[int] | None = None) -> None:
        self.numbers = list(stop_signal_numbers() if numbers is None else numbers)
        self.previous: dict[int, Any] = {}  # the handlers we replaced, by signal number
        self.installed = False
        self.requested: int | None = None
        self.on_stop: Callable[[Interrupted], None] | None = None  # records the run as interrupted
        self.stopped: Interrupted | None = None  # the last stop handed to a previous handler

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for number in self.numbers:
            current = signal.getsignal(number)
            if current is signal.SIG_IGN:
                continue
            self.previous[number] = current
            signal.signal(number, self.handle)
        self.installed = True
        return self

    def handle(self, number: int, frame: Any) -> None:
        if self.requested is None:
            self.requested = number
            return
        raise Interrupted(number)

    def stop(self, step: int, checkpoint: Path | None) -> None:
        """Act on the requested signal at the end of ``step``, whose checkpoint has been saved."""
        number, self.requested = self.requested, None
        stop = Interrupted(number, step, checkpoint)
        previous = self.previous.get(number)
        if not callable(previous):
            raise stop
        self.stopped = stop
        if self.on_stop is not None:
            self.on_stop(stop)
        self.restore()  # the previous handler runs as if ours had never been there; it may exit
        try:
            previous(number, None)
        except BaseException as error:  # e.g. submitit's "not requeued": it goes on to its own caller
            stop.raised = error
            raise
        self.install()  # it returned: the run goes on, and the next signal is ours again

    def restore(self) -> None:
        if self.installed:
            for number, previous in self.previous.items():
                # None: a handler installed outside Python; the default is the closest we can put back.
                signal.signal(number, signal.SIG_DFL if previous is None else previous)
            self.installed = False

    def hand_over(self, number: int) -> None:
        """What the signal would have done without us: the previous Python handler, else exit 128 + number."""
        previous = self.previous.get(number)
        if callable(previous):
            previous(number, None)
            return
        raise SystemExit(128 + number)
