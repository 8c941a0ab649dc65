"""The last resort for a case stuck inside one step: a kernel, a collective, a read.

The runner checks a case's timeout between steps, so a step that never returns is never
checked. The watchdog is a daemon thread that gives the case in progress case_timeout_s +
hang_grace_s. Past that it calls ``on_hang`` (the runner records the case as hung and marks
the run failed) and ends the process with status 3: Python cannot stop a thread stuck in C.
Rows finished before that point are already stored.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HUNG_EXIT_STATUS = 3


class Watchdog:
    def __init__(self, limit_s: float, on_hang: Callable[[Any, float], None]) -> None:
        self.limit_s, self.on_hang = limit_s, on_hang
        # rare wake-ups (it runs beside what is measured), a twentieth of the limit at most late
        self.poll_s = max(0.2, min(5.0, limit_s / 20))
        self._case: Any = None
        self._since = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carbonbench-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def watching(self, case: Any) -> Iterator[None]:
        """Give ``case`` its time from now; a case that returns is no longer watched."""
        with self._lock:
            self._case, self._since = case, time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self._case = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                case, elapsed = self._case, time.perf_counter() - self._since
            if case is not None and elapsed > self.limit_s:
                try:
                    self.on_hang(case, elapsed)
                finally:
                    os._exit(HUNG_EXIT_STATUS)
