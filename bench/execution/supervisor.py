"""The supervisor: ``carbonbench run`` measures a suite in rounds of worker processes.

Each round is one fresh worker (``carbonbench.execution.worker``) that visits every case in a
shuffled order (seeded, and stored with the run), so a case's samples spread over the run's
duration and over processes: the windows of one process share its conditions (other tenants,
clocks, thread placement, memory layout), and only fresh processes sample the variance that
separates one run from the next. Every statistic is then built on rounds, never on windows.

The supervisor imports no torch and measures nothing itself. It owns the run's record
(``carbonbench.results.runlog``), reads the worker's events (``carbonbench.execution.protocol``)
and hands them on, and it is what survives a worker's death:

- a worker that crashes (a segfault, the OOM killer, any signal or exit status) or hangs past
  ``case_timeout_s + hang_grace_s`` (then it is killed) costs the case it was in, stored as
  failed with the cause and the last lines of its standard error; the round goes on in a
  fresh worker;
- a worker that dies before measuring anything (at start-up, in the idle baseline) costs
  nothing: a fresh one takes its round over, once; a second such death in the same round
  stops the run, with both causes;
- an error inside carbonbench (a worker's ``Error`` event) stops the run as an internal error;
- a GPU setting a worker changed (declared by ``DeviceChange`` before it is made) and did not
  say it put back (``DeviceRestored``) is put back by the supervisor once the worker has
  ended, however it ended, and every declared setting once more when the run ends (also after
  Ctrl-C or SIGTERM), to the first original any worker declared.

The standard error of every worker that did not end cleanly is kept next to the store
(``logs/<run id>/``). SIGINT or SIGTERM stops after the current window (the worker finishes it
and stops); a second one stops at once. Rows are written by the workers as they finish, so
nothing finished is lost either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.controls import Changes
from carbonbench.energy.provenance import host
from carbonbench.execution.pool import Worker, WorkerPool
from carbonbench.execution.protocol import (
    CaseDone,
    CaseStarted,
    DeviceChange,
    DeviceRestored,
    Error,
    Event,
    Job,
    Outcome,
    Ready,
    Replaced,
    Round,
    RowStored,
    Sampler,
    Starting,
    Stopping,
)
from carbonbench.results.metadata import RunMetadata, SamplerCost, StoredOptions, Sweep
from carbonbench.results.metrics import round_values
from carbonbench.results.runlog import RunLog
from carbonbench.results.store import ResultRow, Store
from carbonbench.signals import StopRequest
from carbonbench.stats import relative_half_width
from carbonbench.suites.case import Case
from carbonbench.suites.suite import Suite

WORKER = [sys.executable, "-m", "carbonbench.execution.worker"]
STDERR_LINES = 5  # of a dead worker's standard error, kept in its case's error
POLL_S = 0.2
SWEEP_X, SWEEP_Y = "time_per_token", "energy_per_token"  # what a halving sweep judges on
log = logging.getLogger(__name__)


def plan_rounds(case_ids: list[str], rounds: range, seed: int) -> list[list[str]]:
    """The order each round visits the cases in: shuffled, reproducibly for a seed."""
    plan = []
    for r in rounds:
        order = list(case_ids)
        random.Random(f"{seed}:{r}").shuffle(order)
        plan.append(order)
    return plan


def logs_folder(db: Path, run_id: str) -> Path:
    """Where the standard error of a run's workers is kept: beside the store."""
    return db.parent / "logs" / run_id


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
    finished: bool = False  # it reported its end (Sampler)
    error: Error | None = None  # an error inside carbonbench
    sampler: Sampler | None = None


class Supervisor:
    def __init__(
        self,
        suite: Suite,
        db: str | Path,
        carbon: CarbonSettings,
        options: Any,  # carbonbench.execution.runner.RunOptions (a module with torch)
        *,
        run_id: str,
        rounds: list[tuple[int, list[str]]] | None = None,  # (round, case ids): a resume
        on_event: Callable[[Event], None] | None = None,
        worker: list[str] | None = None,
        drop: Callable[[list[ResultRow]], dict[str, str]] | None = None,
    ) -> None:
        """``drop``: for ``sweep = "halving"``, called with the run's rows after each round,
        returns the cases to give no more rounds, each with the case that beat it
        (``carbonbench.analysis.pareto.confidently_dominated``, which this layer cannot
        import)."""
        self.suite, self.db, self.carbon, self.options = suite, Path(db), carbon, options
        self.run_id = run_id
        self.on_event = on_event or (lambda event: None)
        self.worker = worker or WORKER
        self.count = options.rounds or suite.measure.rounds
        ids = [c.case_id for c in suite.cases]
        if rounds is None:
            rounds = list(enumerate(plan_rounds(ids, range(self.count), options.seed)))
        self._schedule = rounds
        self._cases: dict[str, Case] = {c.case_id: c for c in suite.cases}
        self._stop = StopRequest(on_first=self._stop_after_window, on_second=self._stop_now)
        self._failed_cases: set[str] = set()
        self._error: str | None = None  # why the run could not go on
        self._internal = False  # ... because of a bug in carbonbench
        self._proc: subprocess.Popen | None = None
        self._changes = Changes()  # GPU settings workers declared: put back after each
        self._earlier_changes: list[dict[str, Any]] = []  # those of a resumed run's parts
        idle = options.idle  # measured by another run here (ab's first): not again
        self._idle_w: dict[str, float] | None = dict(idle.idle_w) if idle else None
        if suite.measure.sweep is not None and drop is None:
            raise ValueError(f"sweep = {suite.measure.sweep!r} needs the drop rule it names")
        self._drop = drop if suite.measure.sweep is not None else None
        self._dropped: dict[str, dict[str, Any]] = {}
        self._flops: dict[str, list[int]] = {}  # FLOP counts: the store's, and new ones
        self._described = False  # the run's record has a worker's account of the hardware
        self._sampler = SamplerCost()
        self._waited_s = 0.0  # for workers to load, on the run's critical path
        self._logs = logs_folder(self.db, run_id)
        self._kept_logs = False
        uses_gpu = any(c.device.startswith("cuda") for c in suite.cases)
        self.components = ["gpu", "cpu", "memory"] if uses_gpu else ["cpu", "memory"]

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Measure every scheduled (round, case)."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="carbonbench-") as tmp:
            self.tmp = Path(tmp)
            m = self.suite.measure
            self._pool = WorkerPool(
                self.worker,
                {case.phase for case in self.suite.cases},
                self.tmp,
                load_s=m.case_timeout_s + m.hang_grace_s,
                on_start=lambda count: self.on_event(Starting(count)),
            )
            try:  # the first rounds' workers load while the run is set up
                self._pool.start(self._pool.ahead(self._rounds_left(0)))
                return self._run(started)
            finally:
                self._pool.close()

    def _run(self, started: float) -> Outcome:
        with Store(self.db, check=True) as store:
            self.store = store
            self._flops = store.flop_counts()  # made by earlier runs: no worker counts again
            self.record = self._begin()
            self._earlier_changes = list(self.record.metadata.device_changes)
            status = "failed"
            try:
                with self._stop.installed():
                    self._rounds(self._schedule)
                    self._more_rounds(started)
                status = self._status()
            finally:
                self._changes.put_back(every=True)  # idempotent; after a signal too
                status = self._end(status)
        return Outcome(self.run_id, status, self._stop.signal, self._error, self._internal)

    def _status(self) -> str:
        if self._stop.requested:
            return "interrupted"
        if self._error is not None or self._failed_cases:
            return "failed"
        return "ok"

    def _position(self, round: int) -> int:
        """Where ``round`` stands in the schedule (adaptive rounds append theirs)."""
        return next(i for i, (r, _) in enumerate(self._schedule) if r == round)

    def _rounds_left(self, index: int) -> int:
        """Rounds of the schedule from its ``index``-th on that still have cases."""
        return sum(1 for _, ids in self._schedule[index:] if ids)

    def _going_on(self) -> bool:
        return not self._stop.requested and self._error is None

    def _rounds(self, schedule: list[tuple[int, list[str]]]) -> None:
        for index, (round, case_ids) in enumerate(schedule):
            if not case_ids:  # every case of it dropped by the sweep
                continue
            pending = list(case_ids)
            scheduled = sum(len(ids) for _, ids in self._schedule)
            self.on_event(Round(round, index, len(self._schedule), scheduled))
            early_deaths: list[str] = []  # workers of this round dead before measuring
            while pending and self._going_on():
                wanted = self._rounds_left(self._position(round))
                outcome = self._worker(round, pending, wanted)
                pending = [c for c in pending if c not in outcome.done]
                self._failed_cases.update(outcome.failed)
                if outcome.error is not None:
                    self._internal = True
                    self._error = f"internal error in a worker: {outcome.error.message}"
                elif outcome.dead_in is not None:
                    pending.remove(outcome.dead_in)
                    self._failed_cases.add(outcome.dead_in)
                elif not outcome.finished and self._going_on() and not outcome.done:
                    early_deaths.append(outcome.cause or "it ended")
                    if len(early_deaths) == 1:
                        log.warning("round %d: %s; a fresh worker takes over", round, outcome.cause)
                        self.on_event(Replaced(round, early_deaths[0]))
                    else:
                        self._error = (
                            f"two workers of round {round} died before measuring anything: "
                            + "; then ".join(early_deaths)
                        )
            if not self._going_on():
                return
            self._after_round(round)

    def _after_round(self, round: int) -> None:
        """A sweep that stops early (``sweep = "halving"``): the settings the drop rule finds
        beaten with confidence are taken out of every later round, and the run's record says
        which, after which round, and by what (also what ``--resume`` measures)."""
        if self._drop is None:
            return
        beaten = {
            case_id: by
            for case_id, by in self._drop(self.store.rows(self.run_id)).items()
            if case_id not in self._dropped and case_id in self._cases
        }
        if not beaten:
            return
        for case_id, by in beaten.items():
            self._dropped[case_id] = {"after_round": round, "by": by}
            log.info(
                "sweep: %s gets no more rounds after round %d (beaten by %s)", case_id, round, by
            )
        for i in range(self._position(round) + 1, len(self._schedule)):
            r, ids = self._schedule[i]
            self._schedule[i] = (r, [c for c in ids if c not in self._dropped])
        m = self.suite.measure
        self.record.update(
            order=[[r, ids] for r, ids in self._schedule if ids],
            sweep=Sweep(m.sweep or "", SWEEP_X, SWEEP_Y, dict(self._dropped)),
        )

    def _more_rounds(self, started: float) -> None:
        """Adaptive rounds: with ``ci_half_width``, more rounds of the cases whose interval
        over rounds is still wider, up to ``max_rounds`` and within ``budget_s``."""
        m = self.suite.measure
        if m.ci_half_width is None:
            return
        next_round = 1 + max((r for r, _ in self._schedule), default=-1)
        while next_round < m.max_rounds and self._going_on():
            if m.budget_s is not None and time.monotonic() - started > m.budget_s:
                return
            values = round_values(self.store.rows(self.run_id))
            wide = [
                case_id
                for case_id in self._cases
                if case_id not in self._failed_cases
                and case_id not in self._dropped
                and relative_half_width(values.get(case_id, [])) > m.ci_half_width
            ]
            if not wide:
                return
            (order,) = plan_rounds(wide, range(next_round, next_round + 1), self.options.seed)
            self._schedule.append((next_round, order))
            self._rounds([(next_round, order)])
            next_round += 1

    # -- one worker -----------------------------------------------------------------------

    def _worker(self, round: int, case_ids: list[str], wanted: int = 1) -> _Outcome:
        """One worker measures ``case_ids`` of ``round``; ``wanted``: the rounds still to
        come, this one included (how many workers to start together when none is left)."""
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
        waiting = time.monotonic()
        worker = self._pool.take(wanted)
        self._waited_s += time.monotonic() - waiting
        number, proc = worker.number, worker.proc
        self._sampler.workers += 1
        log_path = worker.log_path
        worker.hand(job)
        self._proc = proc
        log.debug(
            "worker %d (pid %d) for round %d: %d case(s)", number, proc.pid, round, len(case_ids)
        )
        if self._stop.requested:  # a signal came while it started
            proc.send_signal(signal.SIGINT)
        try:
            outcome = self._follow(worker, round)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self._proc = None
            self._changes.put_back()  # what it changed and, dead or killed, did not undo
        if not outcome.finished and outcome.cause is None:
            outcome.cause = worker.killed_for or f"the worker {_cause(proc.returncode)}"
        clean = outcome.finished and not outcome.failed and proc.returncode == 0
        kept = None if clean else self._keep_log(log_path, round, number)
        tail = _tail(log_path)
        if tail and outcome.cause is not None and outcome.error is None:
            outcome.cause += "; its last output: " + " | ".join(tail)
        if kept is not None and outcome.cause is not None:
            outcome.cause += f" (its log: {kept})"
        if outcome.dead_in is not None and not self._stop.now:
            case = self._cases[outcome.dead_in]
            assert outcome.cause is not None
            row = self.record.failed(case, round, outcome.cause, self.carbon)
            self.on_event(RowStored(row.case_id, round, 0, "failed", row.error, None))
            self.on_event(CaseDone(row.case_id, round, ok=False))
        elif self._stop.requested:
            outcome.dead_in = None  # stopped on request: not a failure of its case
        if outcome.sampler:
            self._sampler.reads += outcome.sampler.reads
            self._sampler.cpu_s += outcome.sampler.cpu_s
            self._sampler.interval_s = outcome.sampler.interval_s
        return outcome

    def _keep_log(self, path: Path, round: int, number: int) -> Path | None:
        """Keep the standard error of a worker that did not end cleanly, beside the store."""
        if not path.exists() or path.stat().st_size == 0:
            return None
        try:
            self._logs.mkdir(parents=True, exist_ok=True)
            kept = self._logs / f"round-{round}-worker-{number}.log"
            shutil.copyfile(path, kept)
        except OSError as error:
            log.warning("could not keep worker %d's log in %s: %s", number, self._logs, error)
            return None
        self._kept_logs = True
        return kept

    def _follow(self, worker: Worker, round: int) -> _Outcome:
        """Read the worker's events until it ends; kill it if a case outlives its limit."""
        proc = worker.proc
        m = self.suite.measure
        limit = m.case_timeout_s + m.hang_grace_s
        outcome = _Outcome()
        current: str | None = None
        since = time.monotonic()
        while True:
            event = worker.next(POLL_S)
            if event is None:
                break
            if isinstance(event, str):
                if event:
                    log.error("worker (pid %d): %s", proc.pid, event)
            elif isinstance(event, Ready):
                self._on_ready(event)
                since = time.monotonic()
            elif isinstance(event, CaseStarted):
                current, since = event.case_id, time.monotonic()
            elif isinstance(event, CaseDone):
                self._keep_flops(event.flops)
                outcome.done.append(event.case_id)
                if not event.ok:
                    outcome.failed.append(event.case_id)
                current = None
            elif isinstance(event, Sampler):
                outcome.finished = True
                outcome.sampler = event
            elif isinstance(event, Error):
                outcome.error = event
                outcome.cause = f"internal error: {event.message}"
            elif isinstance(event, DeviceChange):
                # in the run's record at once, for whoever finds this supervisor killed
                if self._changes.declared(event.change):
                    self.record.update(device_changes=self._device_changes())
            elif isinstance(event, DeviceRestored):
                self._changes.restored(event.change)
            if isinstance(event, Event) and not isinstance(event, Sampler | Error):
                self.on_event(event)
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
                if outcome.cause is None:
                    outcome.cause = f"the worker did not start within {startup:g} s"
                proc.kill()
        proc.wait()
        ended = outcome.finished or outcome.error is not None
        if current is not None and outcome.dead_in is None and not ended:
            outcome.dead_in = current  # it died inside this case
        return outcome

    def _keep_flops(self, counts: dict[str, list[int]]) -> None:
        """Store the counts a worker made (those its job did not bring), for later rounds and
        runs; their keys are opaque here (carbonbench.models.flops makes them: it needs torch)."""
        new = {key: value for key, value in counts.items() if key not in self._flops}
        if new:
            self.store.add_flop_counts(new)
            self._flops.update(new)

    def _on_ready(self, event: Ready) -> None:
        """The first worker's account of the hardware and sensors completes the run's record;
        its idle baseline serves every later round."""
        if self._idle_w is None and event.idle_w is not None:
            self._idle_w = event.idle_w
        if not self._described:
            self._described = True
            self.record.update(**RunMetadata.fields_in(event.metadata))

    # -- signals --------------------------------------------------------------------------

    def _stop_after_window(self, name: str) -> None:
        self.on_event(Stopping(name))
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # finish the window, then stop

    def _stop_now(self, name: str) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    # -- the run's record -----------------------------------------------------------------

    def _begin(self) -> RunLog:
        if self.options.resume is not None:
            return RunLog.reopen(self.store, self.run_id, resumed=True)
        metadata = RunMetadata(
            **RunMetadata.fields_in(host()),
            carbon=self.carbon.to_dict(),
            world_size=1,
            filters=self.options.filters,
            options=StoredOptions(**self.options.stored()),
            rounds=self.count,
            idle_source=self.options.idle.source if self.options.idle else None,
            order=[[r, ids] for r, ids in self._schedule],
            skipped=list(self.suite.skipped),
        )
        return RunLog.begin_suite(self.store, self.run_id, self.suite, self.options.label, metadata)

    def _end(self, status: str) -> str:
        ordered = dict(self.record.metadata.case_order) if self.record.reopened else {}
        for r, ids in self._schedule:
            ordered.setdefault(r, ids)
        return self.record.end(
            status,
            order=[[r, ids] for r, ids in sorted(ordered.items())],
            idle_w=self._idle_w if self._idle_w is not None else self.record.metadata.idle_w,
            sampler=self._sampler,
            worker_wait_s=round(self._waited_s, 3),
            stopped_by=self._stop.signal,
            error=self._error,
            logs=str(self._logs) if self._kept_logs else self.record.metadata.logs,
            device_changes=self._device_changes(),
        )

    def _device_changes(self) -> list[dict[str, Any]]:
        """The GPU settings the run changed, for its record: an earlier part's (a resume's),
        then this one's, each with who put it back (None: nobody yet)."""
        return [*self._earlier_changes, *self._changes.record()]
