"""Measuring cases in this process: each case warmed up, measured in sized windows, written
row by row. A worker process runs one round of a run this way (``carbonbench.execution.worker``); a
distributed rank runs its share with a ``DdpCoordinator``; tests and scripts may run a suite
in-process with ``Runner``.

A case that fails (exception, out of memory, NaN loss, timeout) becomes a ``failed`` row and
the next case goes on. An interrupt (Ctrl-C, or the supervisor's SIGINT) stops after the current
window; every finished row is kept.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.controls import Changes
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.energy.provenance import host
from carbonbench.errors import CarbonbenchError
from carbonbench.execution import settings
from carbonbench.execution.coordination import SOLO, CaseFailed, Solo
from carbonbench.execution.data import target_loss
from carbonbench.execution.protocol import (
    CaseDone,
    CaseStarted,
    DeviceChange,
    DeviceRestored,
    Event,
    Idle,
    JobFailed,
    RowStored,
    RunOptions,
    Window,
)
from carbonbench.execution.runtime import measured_by
from carbonbench.execution.workloads import Work, Workload, make_workload
from carbonbench.models import build, count_parameters
from carbonbench.results.metadata import RunMetadata, SamplerCost, StoredOptions
from carbonbench.results.recorder import Recorder, downsample
from carbonbench.results.runlog import RunLog, new_run_id
from carbonbench.results.store import ResultRow, Store
from carbonbench.signals import StopRequest
from carbonbench.suites.case import Case
from carbonbench.suites.suite import Suite

__all__ = [
    "CaseFailed",
    "CaseRunner",
    "JobFailed",
    "RunOptions",
    "Runner",
    "in_case",
    "new_run_id",
    "stop_request",
]


WINDOW_AIM = 0.8
"""Measured windows are sized to last this fraction of ``min_window_s``, then topped up to it
(see ``_window``): aiming under the floor ends the usual window within a step of it."""


def stop_request() -> StopRequest:
    """First SIGINT or SIGTERM: finish the current window, then stop. Second: stop now."""
    return StopRequest()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _top_up(floor_s: float, elapsed_s: float, taken: int) -> int:
    """Steps more for a window that has lasted ``elapsed_s`` over ``taken`` steps to reach
    ``floor_s`` at its own rate so far; 0 once it has."""
    if elapsed_s >= floor_s:
        return 0
    if elapsed_s <= 0 or taken <= 0:
        return 1
    return math.ceil(round((floor_s - elapsed_s) * taken / elapsed_s, 6))  # no 12.000...02


def failure_message(error: BaseException) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of memory: {str(error).splitlines()[0]}"
    if isinstance(error, CaseFailed | CarbonbenchError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def in_case() -> Iterator[None]:
    """Code of the case itself (its model, its workload): whatever it raises fails the case,
    with its traceback. Everything outside such a block is carbonbench's own, and an error
    there is a bug to report, never a failed case."""
    try:
        yield
    except CaseFailed:
        raise
    except Exception as error:
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        raise CaseFailed(failure_message(error), traceback=traceback.format_exc()) from error


class CaseRunner:
    """Measures one case at a time in this process, with the meter it is given."""

    def __init__(
        self,
        suite: Suite,
        meter: EnergyMeter,
        recorder: Recorder,
        options: RunOptions | None = None,
        coordinator: Solo = SOLO,
        stop: StopRequest | None = None,
        on_window: Callable[[Case, int, Measurement, int], None] | None = None,
        declare: Callable[[Event], None] | None = None,
    ) -> None:
        """``on_window(case, repeat, measurement, steps)``: after each measured window.
        ``declare(event)``: each GPU setting a case changes, before it is changed
        (``DeviceChange``) and once it is put back (``DeviceRestored``), for whoever outlives
        this process (the supervisor) to put back should it die in between."""
        self.suite, self.meter, self.recorder = suite, meter, recorder
        self.options = options or RunOptions()
        self.coordinator = coordinator
        self.stop = stop or stop_request()
        self.on_window = on_window or (lambda case, repeat, m, steps: None)
        self.declare = declare or (lambda event: None)

    def run_case(self, case: Case, round: int = 0) -> bool:
        """Measure one case with its settings applied; False if it failed (its failure is
        recorded as a row)."""
        started = time.perf_counter()
        try:
            device = self.coordinator.settings_device(case)
            with settings.applied(case, self.declare, device):
                return self._run_case(case, round, started)
        except CaseFailed as error:  # recorded, and the suite goes on
            message = str(error)
            self.recorder.failed(case, round, message, None, traceback=error.traceback)
            self.coordinator.after_failure(case, error, message)
            return False

    def _run_case(self, case: Case, round: int, started: float) -> bool:
        params = None
        c = self.coordinator
        try:
            device = c.device_for(case)
            with in_case():
                torch.manual_seed(self.options.seed)
                model = build(case.arch, case.size, case.impl).to(device)
                params = count_parameters(model)
                workload = make_workload(
                    model,
                    case.phase,
                    batch=case.batch,
                    seq_len=case.seq_len,
                    device=device,
                    dtype=case.dtype,
                    corpus=self.options.corpus,
                    new_tokens=self.suite.measure.new_tokens,
                    seed=self.options.seed + c.rank,  # each process of a distributed run its own
                    forward=c.prepare(model, device),
                )
            workload.work = c.scale(workload.work)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if case.phase == "train-to-target":
                self._to_target(case, round, workload, device, params, started)
            else:
                self._repeats(case, round, workload, device, params, started)
            return True
        except CaseFailed as error:  # recorded, and the suite goes on
            message = str(error)
            self.recorder.failed(case, round, message, params, traceback=error.traceback)
            c.after_failure(case, error, message)
            return False

    def _check_time(self, started: float, between_windows: bool = False) -> None:
        """Fail the case once it has run past its timeout."""
        limit = self.suite.measure.case_timeout_s
        late = time.perf_counter() - started > limit
        if between_windows:
            late = self.coordinator.agree_flag(late)
        elif not self.coordinator.check_every_step():
            return
        if late:
            message = f"timed out: the case ran past case_timeout_s = {limit:g} s"
            raise CaseFailed(message, agreed=between_windows)

    def _steps(self, workload: Workload, steps: int, device, started: float) -> list:
        losses = []
        with in_case():
            for _ in range(steps):
                self._check_time(started)
                loss = workload.step()
                if loss is not None:
                    losses.append(loss)
            _sync(device)
        return losses

    def _finite_loss(self, losses: list) -> float | None:
        if not losses:
            return None
        stacked = torch.stack(losses).float()
        if self.coordinator.agree_flag(not bool(torch.isfinite(stacked).all())):
            raise CaseFailed("loss became NaN or infinite: training diverged", agreed=True)
        return float(stacked.mean())

    def _measured_row(
        self,
        case: Case,
        round: int,
        repeat: int,
        m: Measurement,
        steps: int,
        work: Work,
        params: int | None,
        device: torch.device,
        loss: float | None,
        **extra_values: Any,
    ) -> ResultRow:
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        row = self.recorder.measured(
            case,
            round,
            repeat,
            m,
            params=params,
            steps=steps,
            samples=steps * work.samples,
            tokens=steps * work.tokens,
            src_tokens=steps * work.src_tokens,
            flops=steps * work.flops if work.flops else None,  # unknown, never 0
            flops_method=work.flops_method,
            loss=loss,
            peak_memory_bytes=peak,
            **extra_values,
        )
        row.extra.update(self.coordinator.row_extra())
        return row

    def _warm_up(self, workload: Workload, steps: int, device, started) -> tuple[list, float]:
        """Run the warm-up steps one at a time, the device synchronised after each; returns
        their losses and the duration of the fastest.

        The first steps of a case pay its first-call costs (on a GPU: cuDNN autotuning,
        allocator growth, compilation), often 10-100x a steady step, and jitter (another
        tenant, a page fault) only ever slows a step down: so a mean over the warm-up says
        little about the steps that follow, and the fastest warm-up step is the closest to
        the steady state. With a single warm-up step that is the slow first one: the first
        window then ends short of its steps and is extended (``_window``), and the next is
        sized from its rate. Warm-up is discarded, so the synchronisation after each of its
        steps costs nothing that is measured."""
        losses, fastest = [], math.inf
        for _ in range(steps):
            begun = time.perf_counter()
            losses += self._steps(workload, 1, device, started)
            fastest = min(fastest, time.perf_counter() - begun)
        return losses, fastest

    def _sized(self, step_s: float) -> int:
        """Steps for a window to last ``WINDOW_AIM`` x ``min_window_s`` at ``step_s`` seconds
        a step: a little under the floor, so that jitter seldom carries a window far past
        it; ``_window`` takes the rest."""
        goal = WINDOW_AIM * self.suite.measure.min_window_s
        return max(1, math.ceil(goal / step_s)) if step_s > 0 else 1

    def _window(self, workload: Workload, steps: int, device, started) -> tuple[list, int, float]:
        """Inside a measured window: ``steps`` steps, then more in chunks, each followed by a
        synchronisation, until the window has lasted ``min_window_s``. Returns the losses,
        the steps taken and the seconds they took.

        The sizing is an estimate (a step may slow down, another tenant may take the CPU),
        so it aims under the floor and each chunk is sized from the window's own rate so far:
        ``ceil((min_window_s - elapsed) / (elapsed / taken))`` steps. A window so ends within
        about a step of ``min_window_s``, never short of it, so that an energy counter that
        updates every ~100 ms has moved enough, with one or two synchronisations more than
        its sized steps had (none costs anything on a CPU). The elapsed time is read after a
        synchronisation, so it is the device's time, not the launch queue's; the meter's
        window starts before and ends after it, so the row's duration is at least as long.

        Distributed: every rank takes the same number of steps (DDP steps are collective),
        so each chunk is the largest any rank's own clock asks for (``agree_most``). Where
        the ranks' clocks differ (the barrier at the window's start released one later than
        another), a rank's window may then end beyond what it alone needed, never short by
        its own clock; the job's row takes the longest rank's duration."""
        c, floor = self.coordinator, self.suite.measure.min_window_s
        begun = time.perf_counter()
        losses = self._steps(workload, steps, device, started)
        taken = steps
        while more := c.agree_most(_top_up(floor, time.perf_counter() - begun, taken)):
            losses += self._steps(workload, more, device, started)
            taken += more
        return losses, taken, time.perf_counter() - begun

    def _repeats(self, case, round, workload: Workload, device, params, started) -> None:
        """Warm up, then measure ``repeats`` windows. The first window is sized from the fastest
        warm-up step, each later one from the rate of the window before it (steps taken over
        their seconds): a steady-state rate measured under the window's own conditions. The
        steps per window are rank 0's, broadcast (``agree``)."""
        measure, c = self.suite.measure, self.coordinator
        warm_steps = max(1, measure.warmup_steps)
        with c.window(self.meter, f"{case.case_id}/{round}/warmup") as warm:
            losses, step_s = self._warm_up(workload, warm_steps, device, started)
            self._finite_loss(losses)
        steps = c.agree(self._sized(step_s))
        warmup = {
            "steps": warm_steps,
            "duration_s": warm.duration_s,
            "energy_j": warm.total_energy_j,
            "timeline": downsample(warm),
        }
        for repeat in range(measure.repeats):
            self._check_time(started, between_windows=True)
            with c.window(self.meter, f"{case.case_id}/{round}/r{repeat}") as m:
                losses, taken, seconds = self._window(workload, steps, device, started)
            self.on_window(case, repeat, m, taken)
            loss = self._finite_loss(losses)
            extra = {"warmup": warmup} if repeat == 0 else {}
            row = self._measured_row(
                case, round, repeat, m, taken, workload.work, params, device, loss, extra=extra
            )
            if c.writes:
                self.recorder.save(row)
            if c.agree_flag(self.stop.requested):
                return
            steps = c.agree(self._sized(seconds / taken))

    def _to_target(self, case, round, workload: Workload, device, params, started) -> None:
        t = self.suite.target
        goal = target_loss(workload.entropy_rate, t.loss_factor, t.loss)
        assert workload.evaluate is not None
        steps, reached, val = 0, False, math.inf
        with self.coordinator.window(self.meter, f"{case.case_id}/{round}/to-target") as m:
            losses = []
            while steps < t.max_steps and time.perf_counter() - started < t.max_seconds:
                losses += self._steps(workload, 1, device, started)
                steps += 1
                if steps % t.eval_every == 0:
                    self._finite_loss(losses[-t.eval_every :])
                    with in_case():
                        val = workload.evaluate()
                    if val <= goal:
                        reached = True
                        break
                if self.stop.requested:
                    break
        self.on_window(case, 0, m, steps)
        row = self._measured_row(
            case,
            round,
            0,
            m,
            steps,
            workload.work,
            params,
            device,
            val if steps else None,
            target_loss=goal,
            reached_target=reached,
            extra={"entropy_rate": workload.entropy_rate, "eval_every": t.eval_every},
        )
        if self.coordinator.writes:
            self.recorder.save(row)


class Runner:
    """A whole run in this process: every case of the suite, one round, rows stored as they
    come. No isolation between cases (a crash ends the run): ``carbonbench run`` measures in
    supervised worker processes instead (``carbonbench.execution.supervisor``); this serves
    distributed ranks, tests and scripts."""

    def __init__(
        self,
        suite: Suite,
        store: Store | None,
        meter: EnergyMeter,
        carbon: CarbonSettings,
        options: RunOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        coordinator: Solo = SOLO,
        run_id: str | None = None,
        round: int = 0,
        rounds: int = 1,
    ) -> None:
        """``round`` > 0 continues the run ``run_id`` (a distributed job's next round)."""
        self.suite, self.store, self.meter, self.carbon = suite, store, meter, carbon
        self.options = options or RunOptions()
        self.on_event = on_event or (lambda event: None)
        self.coordinator = coordinator
        self.run_id = run_id or self.options.resume or new_run_id()
        self.round, self.rounds = round, rounds
        self.stop = stop_request()
        self.recorder = Recorder(
            store if coordinator.writes else None,
            self.run_id,
            carbon,
            coordinator.world_size,
            on_row=self._row_stored,
        )
        self.cases = CaseRunner(
            suite,
            meter,
            self.recorder,
            self.options,
            coordinator,
            self.stop,
            on_window=lambda case, repeat, m, steps: self.on_event(
                Window(case.case_id, self.round, repeat, m.duration_s, steps)
            ),
            declare=self._declare,
        )
        self.changes = Changes()  # GPU settings the cases changed, put back again at the end

    def _declare(self, event: Event) -> None:
        if isinstance(event, DeviceChange):
            self.changes.declared(event.change)
        elif isinstance(event, DeviceRestored):
            self.changes.restored(event.change)
        self.on_event(event)

    def _row_stored(self, row: ResultRow) -> None:
        watts = row.energy_j / row.duration_s if row.duration_s > 0 else None
        self.on_event(RowStored(row.case_id, row.round, row.repeat, row.status, row.error, watts))

    @property
    def rows(self) -> list[ResultRow]:
        return self.recorder.rows

    def run(self) -> str:
        """Measure every case; returns the run's status (ok, failed or interrupted)."""
        suite, c = self.suite, self.coordinator
        if self.store is not None:
            self._begin()
        status = "ok"
        try:
            with self.stop.installed():
                if suite.measure.idle_baseline_s > 0:
                    self.on_event(Idle(suite.measure.idle_baseline_s))
                    self.meter.idle_baseline(suite.measure.idle_baseline_s)
                for case in suite.cases:
                    if c.agree_flag(self.stop.requested):
                        status = "interrupted"
                        break
                    self.on_event(CaseStarted(case.case_id, self.round))
                    ok = self.cases.run_case(case, self.round)
                    self.on_event(CaseDone(case.case_id, self.round, ok))
                    if not ok:
                        status = "failed" if status == "ok" else status
                if self.stop.requested:
                    status = "interrupted"
        except KeyboardInterrupt:
            status = "interrupted"
        except BaseException:
            status = "failed"  # e.g. the store could not be written: say so, then raise
            raise
        finally:
            self.changes.put_back(every=True, by="run")  # idempotent: each case put its back
            if self.store is not None:
                status = self._end(status)
        return status

    def _begin(self) -> None:
        assert self.store is not None
        if self.options.resume is not None or self.round > 0:
            resumed = self.options.resume is not None
            self.record = RunLog.reopen(self.store, self.run_id, resumed=resumed)
            return
        self.record = RunLog.begin_suite(
            self.store,
            self.run_id,
            self.suite,
            self.options.label,
            RunMetadata(
                **RunMetadata.fields_in(host()),
                carbon=self.carbon.to_dict(),
                world_size=self.coordinator.world_size,
                filters=self.options.filters,
                options=StoredOptions(**self.options.stored()),
                rounds=self.rounds,
                skipped=list(self.suite.skipped),
            ),
        )

    def _end(self, status: str) -> str:
        m = self.meter
        return self.record.end(
            status,
            **RunMetadata.fields_in(measured_by(m)),
            idle_w=m.idle_w,
            sampler=SamplerCost(m.sampler_reads, m.sampler_cpu_s, 1, m.interval_s),
            device_changes=[*self.record.metadata.device_changes, *self.changes.record()],
        )
