"""The supervisor: ``carbonbench run`` measures a suite in rounds of worker processes.

Each round is one fresh worker (``carbonbench.execution.worker``) that visits every case in a shuffled
order (seeded, and stored with the run), so a case's samples spread over the run's duration
and over processes: the windows of one process share its conditions (other tenants, clocks,
thread placement, memory layout), and only fresh processes sample the variance that separates
one run from the next. Every statistic is then built on rounds, never on windows.

The supervisor imports no torch and measures nothing itself. It reads the worker's events,
and it is what survives a worker's death: a worker that crashes (a segfault, the OOM killer,
any signal or exit status) or hangs past ``case_timeout_s + hang_grace_s`` (then it is killed)
costs one case, stored as failed with the cause and the last lines of the worker's standard
error; the round goes on in a fresh worker. SIGINT or SIGTERM stops after the current window
(the worker finishes it and stops); a second one stops at once. Rows are written by the
workers as they finish, so nothing finished is lost either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.provenance import host
from carbonbench.errors import CarbonbenchError
from carbonbench.execution.worker import Job
from carbonbench.results.metrics import round_values
from carbonbench.results.recorder import Recorder, begin, now
from carbonbench.results.store import Store
from carbonbench.stats import relative_half_width
from carbonbench.suites.case import Case
from carbonbench.suites.suite import Suite

WORKER = [sys.executable, "-m", "carbonbench.execution.worker"]
STDERR_LINES = 5  # of a dead worker's standard error, kept in its case's error
POLL_S = 0.2


class WorkerFailed(CarbonbenchError):
    """A worker died before measuring anything: the environment, not a case, is at fault."""


def plan_rounds(case_ids: list[str], rounds: range, seed: int) -> list[list[str]]:
    """The order each round visits the cases in: shuffled, reproducibly for a seed."""
    plan = []
    for r in rounds:
        order = list(case_ids)
        random.Random(f"{seed}:{r}").shuffle(order)
        plan.append(order)
    return plan


def _cause(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _tail(path: Path, lines: int = STDERR_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


@dataclass
class _Outcome:
    """What one worker did."""

    done: list[str] = field(default_factory=list)  # cases it finished (measured or failed)
    failed: list[str] = field(default_factory=list)  # of those, the failed ones
    dead_in: str | None = None  # the case it was in when it died or was killed
    cause: str | None = None  # why it ended early
    finished: bool = False
    ready: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None


class Supervisor:
    def __init__(
        self,
        suite: Suite,
        db: str | Path,
        carbon: CarbonSettings,
        options: Any,  # carbonbench.execution.runner.RunOptions (imported there with torch)
        *,
        run_id: str,
        rounds: list[tuple[int, list[str]]] | None = None,  # (round, case ids): a resume
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        worker: list[str] | None = None,
    ) -> None:
        self.suite, self.db, self.carbon, self.options = suite, Path(db), carbon, options
        self.run_id = run_id
        self.on_event = on_event or (lambda kind, info: None)
        self.worker = worker or WORKER
        self.count = options.rounds or suite.measure.rounds
        ids = [c.case_id for c in suite.cases]
        if rounds is None:
            rounds = list(enumerate(plan_rounds(ids, range(self.count), options.seed)))
        self.schedule = rounds
        self.cases: dict[str, Case] = {c.case_id: c for c in suite.cases}
        self.stop: str | None = None  # the signal that asked to stop
        self.stop_now = False
        self.failed_cases: set[str] = set()
        self.error: str | None = None  # why the run could not go on, for the command line
        self._proc: subprocess.Popen | None = None
        self._idle_w: dict[str, float] | None = None
        self._flops: dict[str, list[int]] = {}  # FLOP counts made by earlier workers
        self._ready: dict[str, Any] | None = None
        self._sampler = {"reads": 0, "cpu_s": 0.0, "workers": 0}
        uses_gpu = any(c.device.startswith("cuda") for c in suite.cases)
        self.components = ["gpu", "cpu", "memory"] if uses_gpu else ["cpu", "memory"]

    # -- the run --------------------------------------------------------------------------

    def run(self) -> str:
        """Measure every scheduled (round, case); returns the run's status."""
        started = time.monotonic()
        with (
            Store(self.db, check=True) as store,
            tempfile.TemporaryDirectory(prefix="carbonbench-") as tmp,
        ):
            self.store, self.tmp = store, Path(tmp)
            self._begin()
            status = "failed"
            try:
                with self._signals():
                    self._rounds(self.schedule)
                    self._more_rounds(started)
                status = self._status()
            finally:
                self._end(status)
        return status

    def _status(self) -> str:
        if self.stop is not None:
            return "interrupted"
        if self.error is not None or self.failed_cases:
            return "failed"
        if self.options.resume is not None and any(
            r.status != "ok" for r in self.store.rows(self.run_id)
        ):
            return "failed"  # the whole run's status, earlier rows too
        return "ok"

    def _rounds(self, schedule: list[tuple[int, list[str]]]) -> None:
        total = len(schedule)
        for index, (round, case_ids) in enumerate(schedule):
            pending = list(case_ids)
            self.on_event("round", {"round": round, "index": index, "rounds": total})
            while pending and self.stop is None and self.error is None:
                outcome = self._worker(round, pending)
                pending = [c for c in pending if c not in outcome.done]
                self.failed_cases.update(outcome.failed)
                if outcome.dead_in is not None:
                    pending.remove(outcome.dead_in)
                    self.failed_cases.add(outcome.dead_in)
                elif not outcome.finished and self.stop is None and not outcome.done:
                    tail = f" ({outcome.cause})" if outcome.cause else ""
                    self.error = f"a worker process failed before measuring anything{tail}"
            if self.stop is not None or self.error is not None:
                return

    def _more_rounds(self, started: float) -> None:
        """Adaptive rounds: with ``ci_half_width``, more rounds of the cases whose interval
        over rounds is still wider, up to ``max_rounds`` and within ``budget_s``."""
        m = self.suite.measure
        if m.ci_half_width is None:
            return
        next_round = 1 + max((r for r, _ in self.schedule), default=-1)
        while next_round < m.max_rounds and self.stop is None and self.error is None:
            if m.budget_s is not None and time.monotonic() - started > m.budget_s:
                return
            values = round_values(self.store.rows(self.run_id))
            wide = [
                case_id
                for case_id in self.cases
                if case_id not in self.failed_cases
                and relative_half_width(values.get(case_id, [])) > m.ci_half_width
            ]
            if not wide:
                return
            (order,) = plan_rounds(wide, range(next_round, next_round + 1), self.options.seed)
            self.schedule.append((next_round, order))
            self._rounds([(next_round, order)])
            next_round += 1

    # -- one worker -----------------------------------------------------------------------

    def _worker(self, round: int, case_ids: list[str]) -> _Outcome:
        job = Job(
            db=str(self.db),
            run_id=self.run_id,
            round=round,
            cases=case_ids,
            suite_text=self.suite.text,
            suite_source=self.suite.source,
            carbon=self.carbon.to_dict(),
            options=self.options.stored(),
            components=self.components,
            idle_w=self._idle_w,
            flops=self._flops,
            supervisor_pid=os.getpid(),
        )
        number = self._sampler["workers"]
        self._sampler["workers"] += 1
        job_path, log_path = self.tmp / f"job-{number}.json", self.tmp / f"worker-{number}.log"
        job.write(job_path)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*self.worker, str(job_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # the terminal's Ctrl-C reaches the supervisor only
            )
        self._proc = proc
        if self.stop is not None:  # a signal came while it started
            proc.send_signal(signal.SIGINT)
        try:
            outcome = self._follow(proc, round)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self._proc = None
        if not outcome.finished and outcome.cause is None:
            outcome.cause = f"the worker {_cause(proc.returncode)}"
        tail = _tail(log_path)
        if outcome.dead_in is not None and not self.stop_now:
            if tail:
                outcome.cause += "; its last output: " + " | ".join(tail)
            case = self.cases[outcome.dead_in]
            recorder = Recorder(self.store, self.run_id, self.carbon)
            recorder.failed(case, round, outcome.cause)
            self.on_event("failed", {"case_id": case.case_id, "error": outcome.cause})
        elif self.stop is not None:
            outcome.dead_in = None  # stopped on request: not a failure of its case
        elif not outcome.finished and tail:
            outcome.cause += "; its last output: " + " | ".join(tail)
        if outcome.sampler:
            self._sampler["reads"] += outcome.sampler.get("reads", 0)
            self._sampler["cpu_s"] += outcome.sampler.get("cpu_s", 0.0)
            self._sampler["interval_s"] = outcome.sampler.get("interval_s")
        return outcome

    def _follow(self, proc: subprocess.Popen, round: int) -> _Outcome:
        """Read the worker's events until it ends; kill it if a case outlives its limit."""
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    events.put(json.loads(line))
            events.put(None)

        threading.Thread(target=read, daemon=True).start()
        m = self.suite.measure
        limit = m.case_timeout_s + m.hang_grace_s
        outcome = _Outcome()
        current: str | None = None
        since = time.monotonic()
        while True:
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                event = {"event": "tick"}
            if event is None:
                break
            kind = event["event"]
            if kind == "idle":
                self.on_event("idle", {"seconds": event["seconds"]})
            elif kind == "ready":
                outcome.ready = event
                self._on_ready(event)
                self.on_event("ready", event)
                since = time.monotonic()
            elif kind == "case":
                current, since = event["case_id"], time.monotonic()
                self.on_event("case", {"round": round, "case": self.cases[current]})
            elif kind == "row":
                self.on_event("row", event)
            elif kind == "done":
                self._flops.update(event.get("flops") or {})
                outcome.done.append(event["case_id"])
                if not event["ok"]:
                    outcome.failed.append(event["case_id"])
                current = None
                self.on_event("done", {"round": round, "case_id": event["case_id"]})
            elif kind == "finished":
                outcome.finished = True
                outcome.sampler = event.get("sampler")
            waited = time.monotonic() - since
            startup = limit + m.idle_baseline_s
            if current is not None and waited > limit and outcome.cause is None:
                outcome.dead_in = current
                outcome.cause = (
                    f"hung: no step returned within case_timeout_s + hang_grace_s = "
                    f"{m.case_timeout_s:g} + {m.hang_grace_s:g} s, so its worker was killed"
                )
                proc.kill()
            elif current is None and not outcome.finished and waited > startup:
                outcome.cause = f"the worker did not start within {startup:g} s"
                proc.kill()
        proc.wait()
        if current is not None and outcome.dead_in is None and not outcome.finished:
            outcome.dead_in = current  # it died inside this case
        return outcome

    def _on_ready(self, event: dict[str, Any]) -> None:
        """The first worker's account of the hardware and sensors completes the run's record;
        its idle baseline serves every later round."""
        if self._idle_w is None and event.get("idle_w") is not None:
            self._idle_w = event["idle_w"]
        if self._ready is None:
            self._ready = event["metadata"]
            run = self.store.run(self.run_id)
            self.store.set_metadata(self.run_id, run.metadata | self._ready)

    # -- signals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        proc = self._proc
        if self.stop is None:
            self.stop = signal.Signals(signum).name
            self.on_event("stopping", {"signal": self.stop})
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # finish the window, then stop
            return
        self.stop_now = True
        if proc is not None and proc.poll() is None:
            proc.kill()

    # -- the run's record -----------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            **host(),
            "carbon": self.carbon.to_dict(),
            "world_size": 1,
            "filters": self.options.filters,
            "options": self.options.stored(),
            "rounds": self.count,
            "order": [[r, ids] for r, ids in self.schedule],
            "skipped": list(self.suite.skipped),
        }

    def _begin(self) -> None:
        begin(
            self.store,
            self.run_id,
            label=self.options.label,
            suite=self.suite,
            metadata=self._metadata(),
            reopen=self.options.resume is not None,
        )

    def _end(self, status: str) -> None:
        metadata = self.store.run(self.run_id).metadata
        if self.options.resume is not None:
            metadata["resumed_at"] = [*metadata.get("resumed_at", []), now()]
            ordered = {r: ids for r, ids in metadata.get("order", [])}
            for r, ids in self.schedule:
                ordered.setdefault(r, ids)
            metadata["order"] = [[r, ids] for r, ids in sorted(ordered.items())]
        else:
            metadata["order"] = [[r, ids] for r, ids in self.schedule]
        metadata["idle_w"] = self._idle_w if self._idle_w is not None else metadata.get("idle_w")
        metadata["sampler"] = self._sampler
        if self.stop is not None:
            metadata["stopped_by"] = self.stop
        if self.error is not None:
            metadata["error"] = self.error
        self.store.end_run(self.run_id, status, now(), metadata)
