"""Stopping on SIGINT and SIGTERM, one way everywhere.

The first signal asks to stop after the current window (``on_first``); a second one asks to
stop at once (``on_second``, by default KeyboardInterrupt). The handlers are installed only
for the ``with`` block and only on the main thread (elsewhere signals keep their meaning), and
the caller's handlers, whatever they were (SIG_IGN under a background job, say), come back.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells say


def _raise(name: str) -> None:
    raise KeyboardInterrupt(name)


class StopRequest:
    """Whether, and by which signal, a stop was asked for."""

    def __init__(
        self,
        on_first: Callable[[str], None] | None = None,
        on_second: Callable[[str], None] = _raise,
        signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
    ) -> None:
        self.on_first = on_first or (lambda name: None)
        self.on_second = on_second
        self.signals = signals
        self.signal: str | None = None  # the first signal's name
        self.now = False  # a second signal came

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def request(self, name: str) -> None:
        """Ask to stop as a signal would (first, then second)."""
        if self.signal is None:
            self.signal = name
            self.on_first(name)
        else:
            self.now = True
            self.on_second(name)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        handler = lambda signum, frame: self.request(signal.Signals(signum).name)  # noqa: E731
        previous = {s: signal.signal(s, handler) for s in self.signals}
        try:
            yield self
        finally:
            for s, old in previous.items():
                signal.signal(s, signal.SIG_DFL if old is None else old)  # None: set in C
