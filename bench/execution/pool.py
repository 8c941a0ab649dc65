"""Worker processes started ahead of their rounds, so that their start-up costs less.

Every fresh worker spends seconds before it can measure: its import of torch (about 1.5 s on 2
cores) and of what its workloads import on first use (torch._dynamo for training, about 1.2 s
more). Started one after another, each round's worker pays that on the run's critical path;
started together, the workers of several rounds import side by side, on as many cores as the
machine has, while the supervisor sets the run up.

The rule that keeps rounds honest: **nothing imports while anything is measured**. A job is
handed out only once every started worker has loaded (or died), and a loaded worker waits for
its job blocked on its standard input, using no CPU. Each worker is still a fresh process, only
started earlier: its own interpreter, hash seed, address space layout and allocator, and no
thread pool, CUDA context or model before its job, whose round it measures alone.

How many start together: the rounds the run still has planned, at most ``MOST_AHEAD`` and as
many as a quarter of the available memory holds at ``WORKER_BYTES`` each (a loaded CPU worker
holds about 300 MB). Torch-free: the supervisor uses it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from carbonbench.execution.protocol import Event, Job, Loaded, ProtocolError, decode

MOST_AHEAD = 8
WORKER_BYTES = 512 * 2**20
log = logging.getLogger(__name__)

Message = Event | str | None  # an event, a line that is not one, or the end of the stream


@dataclass
class Worker:
    """One worker process, its standard error's file and what it has said so far."""

    number: int
    proc: subprocess.Popen
    log_path: Path
    loaded: Loaded | None = None
    killed_for: str | None = None  # why the pool killed it, if it did
    _events: queue.Queue[Message] = field(default_factory=queue.Queue)
    _held: list[Message] = field(default_factory=list)  # read while loading, not yet followed

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._events.put(decode(line.decode(errors="replace")))
            except ProtocolError as error:
                self._events.put(str(error))
        self._events.put(None)

    def next(self, timeout: float) -> Message | str:
        """The next message; ``""`` when none came within ``timeout`` seconds."""
        if self._held:
            return self._held.pop(0)
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return ""

    def hand(self, job: Job) -> None:
        """Give the worker its job (a worker already dead finds out by its stream's end)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.proc.stdin.write(job.to_line().encode())
            self.proc.stdin.close()

    def wait_loaded(self, deadline: float) -> None:
        """Until it has loaded, said something else (kept for whoever follows it), ended,
        or ``deadline`` (``time.monotonic``) has passed: then it is killed."""
        while self.loaded is None:
            message = self.next(max(0.0, min(0.2, deadline - time.monotonic())))
            if isinstance(message, Loaded):
                self.loaded = message
                log.debug(
                    "worker %d (pid %d) loaded in %.2f s", self.number, message.pid, message.seconds
                )
            elif message == "":
                if time.monotonic() >= deadline:
                    self.killed_for = "the worker did not load in time, so it was killed"
                    self.kill()
                    return
            else:  # an error, a stray line or the end: its follower hears it
                self._held.append(message)
                return

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class WorkerPool:
    """Starts workers (``argv``, each told the run's ``phases``) ahead of need and hands out
    one loaded worker at a time; ``close`` ends those never handed out."""

    def __init__(
        self,
        argv: list[str],
        phases: set[str],
        folder: Path,
        load_s: float,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        """``load_s``: how long a worker may take to load before it is killed as hung;
        ``on_start(count)``: each time workers start together."""
        self.argv = [*argv, "--phases", ",".join(sorted(phases))] if phases else list(argv)
        self.folder, self.load_s = folder, load_s
        self.on_start = on_start or (lambda count: None)
        self._spares: list[Worker] = []
        self._started = 0

    @staticmethod
    def ahead(wanted: int) -> int:
        """How many workers to start together for ``wanted`` more rounds."""
        room = int(psutil.virtual_memory().available * 0.25 // WORKER_BYTES)
        return max(1, min(wanted, MOST_AHEAD, room))

    def start(self, count: int) -> None:
        if count:
            self.on_start(count)
        for _ in range(count):
            number = self._started
            self._started += 1
            log_path = self.folder / f"worker-{number}.log"
            with open(log_path, "wb") as stderr:
                proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    start_new_session=True,  # the terminal's Ctrl-C reaches the supervisor only
                )
            self._spares.append(Worker(number, proc, log_path))
        if count:
            log.debug("started %d worker(s) ahead of their rounds", count)

    def take(self, wanted: int = 1) -> Worker:
        """A loaded worker, once no started worker is still loading. ``wanted``: the rounds
        the run still has planned, this one included; with no worker left, that many (within
        ``ahead``) start together."""
        if not self._spares:
            self.start(self.ahead(wanted))
        deadline = time.monotonic() + self.load_s
        for worker in self._spares:
            worker.wait_loaded(deadline)
        return self._spares.pop(0)

    def close(self) -> None:
        """End the workers never handed out (they have measured nothing)."""
        for worker in self._spares:
            worker.kill()
        for worker in self._spares:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=5)
        self._spares = []
