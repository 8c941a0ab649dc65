"""A level of load on a server, measured as a trace of its requests and its steady state.

Two kinds of load, one thread per request in flight:

* **closed loop** at concurrency N: N threads, each sending its next request as soon as its
  last one ended, until ``requests`` have been sent;
* **Poisson arrivals** at rate λ per second: request i is sent at ``t_i``, with ``t_0 = 0`` and
  inter-arrival gaps ``t_{i+1} - t_i ~ Exp(λ)`` (density ``λ e^{-λt}``, mean ``1/λ``), so that
  the number of arrivals in any window of length T is Poisson(λT); each in its own thread, at
  most ``MAX_IN_FLIGHT`` at once (an arrival beyond that waits for a free thread, and is late).

The energy of a level is measured over its **steady state**, where the server's load is what
the level says it is, not the ramp-up at its start nor the drain at its end:

* closed loop (as the ML.ENERGY benchmark does): from the moment the in-flight count first
  reaches ``k = min(N, requests)`` (the k-th concurrent request is sent) until the first
  request that finishes after the last request was sent: from then on fewer than N are in
  flight, and never again N;
* Poisson: from the moment the level's first request finishes until the last arrival. By
  Little's law the in-flight count is λ·W once the level has run for a request latency W (the
  count at time t is the number of arrivals in the W seconds before t); the first request's
  own latency is one sample of W, known online without assuming a model. After the last
  arrival nothing replaces the requests that finish, so the count drains. A level whose first
  request ends after its last arrival (too few requests for its rate) has no steady state.

Both are decided online, by ``SteadyState`` under the level's lock, so that ``Hooks`` can open
and close an energy meter's window at those instants; ``closed_loop_steady`` and
``poisson_steady`` replay the same rules on the send and finish times of a finished level.
The hooks are called exactly once each, in order, from the thread that crossed the boundary,
or not at all when the level has no steady state; an aborted level calls ``on_steady_end``
when it aborts if the window was open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from carbonbench.errors import InputError
from carbonbench.serving.client import STATUSES, Endpoint, InFlight, RequestRecord, send
from carbonbench.serving.prompts import Prompt

logger = logging.getLogger(__name__)

POLL_S = 0.2  # how often the stop event and the alive check are looked at
MAX_IN_FLIGHT = 1024  # threads of Poisson arrivals at once


def _nothing() -> None:
    pass


def _always() -> bool:
    return True


@dataclass
class Hooks:
    """The caller's hold on a level: callbacks at the steady state's boundaries (keep them
    quick: they run under the level's lock), an event that aborts the level, and a check of
    the server (a dead one aborts the level at once rather than after its requests' timeouts)."""

    on_steady_start: Callable[[], None] = _nothing
    on_steady_end: Callable[[], None] = _nothing
    stop: threading.Event = field(default_factory=threading.Event)
    alive: Callable[[], bool] = _always


@dataclass
class LevelTrace:
    """What a level did: its requests (by id), its span and its steady state."""

    kind: Literal["concurrency", "rate"]
    level: float  # the concurrency N, or the rate λ per second
    records: list[RequestRecord]
    started_at: float
    ended_at: float
    steady_start: float | None = None
    steady_end: float | None = None
    aborted: bool = False
    abort_reason: str = ""

    @property
    def steady_s(self) -> float:
        if self.steady_start is None or self.steady_end is None:
            return 0.0
        return self.steady_end - self.steady_start

    def counts(self) -> dict[str, int]:
        """Requests by status, every status present."""
        counts = dict.fromkeys(STATUSES, 0)
        for record in self.records:
            counts[record.status] += 1
        return counts


class SteadyState:
    """The steady state's boundaries, decided as sends and finishes happen (see the module's
    docstring). Not thread-safe: its caller holds a lock around each call."""

    def __init__(
        self, kind: Literal["concurrency", "rate"], concurrency: int, requests: int, hooks: Hooks
    ) -> None:
        self.kind = kind
        self.full = min(concurrency, requests)
        self.requests = requests
        self.hooks = hooks
        self.sent_count = 0
        self.in_flight = 0
        self.start: float | None = None
        self.end: float | None = None
        self.aborted = False

    def sent(self, at: float) -> None:
        self.sent_count += 1
        self.in_flight += 1
        if self.kind == "concurrency" and self.start is None and self.in_flight >= self.full:
            self._open(at)
        if self.kind == "rate" and self.sent_count == self.requests:
            self._close(at)

    def finished(self, at: float, first: bool) -> None:
        """A request ended; ``first``: it was the level's first sent."""
        self.in_flight -= 1
        if self.kind == "concurrency" and self.sent_count == self.requests:
            self._close(at)
        if self.kind == "rate" and first and self.sent_count < self.requests:
            self._open(at)

    def abort(self, at: float) -> None:
        """Close an open window; none opens after this."""
        self._close(at)
        self.aborted = True

    def _open(self, at: float) -> None:
        if self.start is None and not self.aborted:
            self.start = at
            self.hooks.on_steady_start()

    def _close(self, at: float) -> None:
        if self.start is not None and self.end is None:
            self.end = at
            self.hooks.on_steady_end()


def _replay(
    kind: Literal["concurrency", "rate"],
    sent: Sequence[float],
    finished: Sequence[float],
    concurrency: int,
) -> tuple[float, float] | None:
    if len(sent) != len(finished):
        raise ValueError("one finish time per send time")
    if not sent:
        return None
    first = int(np.argmin(sent))
    # At equal times a finish comes first: in a closed loop a thread's next send follows its
    # last finish.
    events = sorted(
        [(t, 1, i) for i, t in enumerate(sent)] + [(t, 0, i) for i, t in enumerate(finished)]
    )
    steady = SteadyState(kind, concurrency, len(sent), Hooks())
    for at, is_send, index in events:
        if is_send:
            steady.sent(at)
        else:
            steady.finished(at, first=index == first)
    if steady.start is None or steady.end is None:
        return None
    return steady.start, steady.end


def closed_loop_steady(
    sent: Sequence[float], finished: Sequence[float], concurrency: int
) -> tuple[float, float] | None:
    """The closed loop's steady state from its requests' send and finish times (None if the
    in-flight count never reached ``min(concurrency, requests)``)."""
    return _replay("concurrency", sent, finished, concurrency)


def poisson_steady(sent: Sequence[float], finished: Sequence[float]) -> tuple[float, float] | None:
    """The Poisson level's steady state: the first request's finish to the last arrival (None
    if the first finished after the last arrival)."""
    return _replay("rate", sent, finished, 1)


def poisson_arrivals(rate: float, n: int, seed: int) -> list[float]:
    """n arrival times in seconds from the level's start: 0, then gaps drawn from Exp(rate)."""
    if rate <= 0:
        raise InputError(f"bad rate {rate:g}: give a positive number of requests per second")
    gaps = np.random.default_rng(seed).exponential(1 / rate, size=max(n - 1, 0))
    return [0.0, *(float(t) for t in np.cumsum(gaps))][:n]


class _Level:
    """The shared state of one level's threads."""

    def __init__(
        self,
        endpoint: Endpoint,
        prompts: Sequence[Prompt],
        requests: int,
        hooks: Hooks,
        steady: SteadyState,
    ) -> None:
        self.endpoint = endpoint
        self.prompts = prompts
        self.requests = requests
        self.hooks = hooks
        self.steady = steady
        self.lock = threading.Lock()
        self.in_flight = InFlight()
        self.records: list[RequestRecord] = []
        self.issued = 0
        self.abort_reason: str | None = None

    def take(self) -> int | None:
        """The next request's index, counted as sent (None when all are, or aborted)."""
        with self.lock:
            if self.abort_reason is not None or self.issued >= self.requests:
                return None
            index = self.issued
            self.issued += 1
            self.steady.sent(time.perf_counter())
            return index

    def run(self, index: int) -> None:
        prompt = self.prompts[index % len(self.prompts)]
        record = send(self.endpoint, prompt.text, prompt.max_tokens, index, self.in_flight)
        with self.lock:
            self.records.append(record)
            self.steady.finished(time.perf_counter(), first=index == 0)
        if record.status != "ok":
            self.poll()  # a dead server fails requests at once: stop before sending more

    def worker(self) -> None:
        """A closed-loop thread: its next request as soon as its last one ended."""
        while (index := self.take()) is not None:
            self.run(index)

    def arrival(self, slots: threading.BoundedSemaphore) -> None:
        """A Poisson arrival's thread: one request."""
        try:
            index = self.take()
            if index is not None:
                self.run(index)
        finally:
            slots.release()

    def poll(self) -> bool:
        """Abort on the caller's stop or a dead server; True while the level goes on."""
        if self.abort_reason is None:
            if self.hooks.stop.is_set():
                self.abort("stopped by the caller")
            elif not self.hooks.alive():
                self.abort("the server is no longer alive")
        return self.abort_reason is None

    def abort(self, reason: str) -> None:
        with self.lock:
            if self.abort_reason is None:
                self.abort_reason = reason
                logger.warning("level aborted: %s", reason)
            self.steady.abort(time.perf_counter())
        self.in_flight.cut(reason)

    def wait_until(self, at: float) -> bool:
        """Sleep until ``at`` (perf_counter), polling; False if the level was aborted."""
        while (remaining := at - time.perf_counter()) > 0 and self.poll():
            self.hooks.stop.wait(min(POLL_S, remaining))
        return self.poll()

    def acquire(self, slots: threading.BoundedSemaphore) -> bool:
        """A thread slot for the next arrival, polling; False if the level was aborted."""
        while not slots.acquire(timeout=POLL_S):
            if not self.poll():
                return False
        return True

    def join(self, threads: Sequence[threading.Thread]) -> None:
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(POLL_S)
                    self.poll()
        except BaseException:
            self.abort("the load generator failed")
            raise

    def trace(
        self, kind: Literal["concurrency", "rate"], level: float, started: float
    ) -> LevelTrace:
        ended = time.perf_counter()
        with self.lock:
            self.steady.abort(ended)  # closes a window left open (only an aborted level has one)
            records = sorted(self.records, key=lambda record: int(record.id))
        trace = LevelTrace(
            kind=kind,
            level=level,
            records=records,
            started_at=started,
            ended_at=ended,
            steady_start=self.steady.start,
            steady_end=self.steady.end,
            aborted=self.abort_reason is not None,
            abort_reason=self.abort_reason or "",
        )
        logger.info(
            "level %s=%g: %d requests in %.1f s (steady %.1f s): %s%s",
            kind,
            level,
            len(records),
            ended - started,
            trace.steady_s,
            ", ".join(f"{n} {status}" for status, n in trace.counts().items() if n),
            f"; aborted: {trace.abort_reason}" if trace.aborted else "",
        )
        if trace.steady_start is None:
            logger.warning("level %s=%g reached no steady state", kind, level)
        return trace


def _check(prompts: Sequence[Prompt], requests: int) -> None:
    if not prompts:
        raise InputError("no prompts to send: give a corpus with words, or --prompt-tokens")
    if requests < 1:
        raise InputError(f"bad --requests {requests}: give at least 1 request per level")


def closed_loop(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    concurrency: int,
    requests: int,
    hooks: Hooks | None = None,
) -> LevelTrace:
    """``requests`` requests from ``concurrency`` threads in a closed loop; request i sends
    ``prompts[i % len(prompts)]``."""
    _check(prompts, requests)
    if concurrency < 1:
        raise InputError(f"bad concurrency {concurrency}: give at least 1 request in flight")
    hooks = hooks or Hooks()
    level = _Level(
        endpoint, prompts, requests, hooks, SteadyState("concurrency", concurrency, requests, hooks)
    )
    threads = [
        threading.Thread(target=level.worker, name=f"carbonbench-load-{k}", daemon=True)
        for k in range(min(concurrency, requests))
    ]
    started = time.perf_counter()
    if level.poll():
        for thread in threads:
            thread.start()
        level.join(threads)
    return level.trace("concurrency", concurrency, started)


def poisson(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    rate: float,
    requests: int,
    seed: int = 0,
    hooks: Hooks | None = None,
) -> LevelTrace:
    """``requests`` requests arriving as a Poisson process of ``rate`` per second (seeded);
    request i sends ``prompts[i % len(prompts)]``."""
    _check(prompts, requests)
    arrivals = poisson_arrivals(rate, requests, seed)
    hooks = hooks or Hooks()
    level = _Level(endpoint, prompts, requests, hooks, SteadyState("rate", 1, requests, hooks))
    slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    threads: list[threading.Thread] = []
    late = 0
    started = time.perf_counter()
    try:
        for index, offset in enumerate(arrivals):
            if not (level.wait_until(started + offset) and level.acquire(slots)):
                break
            late += time.perf_counter() - (started + offset) > POLL_S
            name = f"carbonbench-load-{index}"
            thread = threading.Thread(target=level.arrival, args=(slots,), name=name, daemon=True)
            thread.start()
            threads.append(thread)
    finally:
        level.join(threads)
    if late:
        logger.warning(
            "%d of %d arrivals at rate %g were sent late (more than %d in flight)",
            late,
            requests,
            rate,
            MAX_IN_FLIGHT,
        )
    return level.trace("rate", rate, started)


def warm_up(endpoint: Endpoint, prompts: Sequence[Prompt], n: int) -> list[RequestRecord]:
    """n requests one after another before measuring, so that first-request costs (loading,
    compiling, caches) fall outside every level. All of them failing is an InputError naming
    the first failure: the levels would fail the same way."""
    records = []
    for index in range(n):
        prompt = prompts[index % len(prompts)]
        records.append(send(endpoint, prompt.text, prompt.max_tokens, f"warm-up-{index}"))
    failed = [record for record in records if record.status != "ok"]
    if records and len(failed) == len(records):
        first = failed[0]
        raise InputError(
            f"all {n} warm-up requests to {endpoint.url} failed, the first {first.status}: "
            f"{first.error}"
        )
    for record in failed:
        logger.warning("warm-up request %s %s: %s", record.id, record.status, record.error)
    return records
