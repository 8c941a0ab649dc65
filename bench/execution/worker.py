"""A worker process: one round of a run, started by the supervisor.

``python -m carbonbench.execution.worker [--phases train,infer]`` first imports what measuring
needs (torch, and what the workloads of those phases import on first use) and says so
(``Loaded``), then waits for its ``Job`` on its standard input: the supervisor starts workers
ahead of their rounds, so that these imports (seconds in every fresh process) run in parallel
and before anything is measured, never during it. An end of input before a job means it is
not needed; it exits. It measures the job's cases in the order given, writing every row to
the store itself (so a row finished is a row kept, whatever happens
to either process), and tells the supervisor what it does in the events of
``carbonbench.execution.protocol``, one JSON line each on its standard output. Anything else it
or the code it runs prints goes to standard error, which the supervisor keeps as the worker's
log. SIGINT (forwarded by the supervisor) stops it after the current window; it ends itself
when the supervisor is gone, putting back first any GPU setting it changed (``Events``). An
error inside carbonbench (not in a case) is sent as an ``Error`` event with its traceback, and
the worker exits with status 70 (EX_SOFTWARE).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from typing import TextIO

from carbonbench.energy.controls import Changes
from carbonbench.execution.protocol import (
    CaseDone,
    CaseStarted,
    DeviceChange,
    DeviceRestored,
    Error,
    Event,
    Idle,
    Job,
    Loaded,
    Ready,
    RowStored,
    Sampler,
    Window,
)

PR_SET_PDEATHSIG = 1
INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in carbonbench, not in the case


class Events:
    """Events to the supervisor; a supervisor that has gone ends this process, after putting
    back the GPU settings it declared (no one else is left to)."""

    def __init__(self, stream: TextIO, supervisor_pid: int) -> None:
        self.stream, self.supervisor_pid = stream, supervisor_pid
        self.changes = Changes()  # GPU settings declared and not yet said to be put back

    def send(self, event: Event) -> None:
        self.orphaned_exit()
        try:
            self.stream.write(event.to_json() + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self._exit()
        if isinstance(event, DeviceChange):
            self.changes.declared(event.change)
        elif isinstance(event, DeviceRestored):
            self.changes.restored(event.change)

    def orphaned_exit(self) -> None:
        """Stop before writing anything more once the supervisor is gone: ``--resume`` will
        measure what is left, and two processes must not write the same case."""
        if self.supervisor_pid and os.getppid() != self.supervisor_pid:
            self._exit()

    def _exit(self) -> None:
        self.changes.put_back(by="orphaned worker")
        os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the supervisor dies, hung or not."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_job(job: Job, events: Events) -> int:
    from carbonbench.energy.carbon import CarbonSettings
    from carbonbench.energy.meter import EnergyMeter
    from carbonbench.energy.sensors import SensorOptions, detect_sensors
    from carbonbench.execution.runner import CaseRunner, RunOptions, stop_request
    from carbonbench.execution.runtime import measured_by
    from carbonbench.models import flops
    from carbonbench.results.recorder import Recorder
    from carbonbench.results.store import ResultRow, Store
    from carbonbench.suites.suite import parse

    flops.learn(job.flops)
    suite = parse(job.suite_text, job.suite_source)
    by_id = {c.case_id: c for c in suite.cases}
    cases = [by_id[case_id] for case_id in job.cases]
    options = RunOptions(**job.options)
    detection = detect_sensors(
        SensorOptions(cpu_tdp_w=options.cpu_tdp_w), components=set(job.components)
    )
    stop = stop_request()
    with (
        Store(job.db, create=False) as store,
        stop.installed(),
        EnergyMeter(detection.sensors, suite.measure.interval_s) as meter,
    ):
        meter.diagnostics = detection.diagnostics
        domains = {d for sensor in meter.sensors for d in sensor.domains}
        if job.idle_w is not None and domains <= set(job.idle_w):
            meter.idle_w = dict(job.idle_w)
        elif suite.measure.idle_baseline_s > 0:  # first round, or a given one that lacks some
            events.send(Idle(suite.measure.idle_baseline_s))
            meter.idle_baseline(suite.measure.idle_baseline_s)
        events.send(Ready(pid=os.getpid(), metadata=measured_by(meter), idle_w=meter.idle_w))

        def on_row(row: ResultRow) -> None:
            watts = row.energy_j / row.duration_s if row.duration_s > 0 else None
            events.send(RowStored(row.case_id, row.round, row.repeat, row.status, row.error, watts))

        recorder = Recorder(
            store,
            job.run_id,
            CarbonSettings.from_dict(job.carbon),
            on_row=on_row,
            before_save=events.orphaned_exit,
        )
        runner = CaseRunner(
            suite,
            meter,
            recorder,
            options,
            stop=stop,
            on_window=lambda case, repeat, m, steps: events.send(
                Window(case.case_id, job.round, repeat, m.duration_s, steps)
            ),
            declare=events.send,  # sent and flushed before each GPU setting is changed
        )
        for case in cases:
            if stop.requested:
                break
            events.send(CaseStarted(case.case_id, job.round))
            ok = runner.run_case(case, job.round)
            # only the counts the job did not bring: the store's may be many
            made = {k: v for k, v in flops.known().items() if k not in job.flops}
            events.send(CaseDone(case.case_id, job.round, ok, made))
        events.send(
            Sampler(meter.sampler_reads, meter.sampler_cpu_s, meter.interval_s, stop.requested)
        )
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    # events go out on the standard output this process was given; everything else printed
    # (by this package, torch or the user's code) goes to standard error
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from carbonbench.logs import configure

    configure(0)  # the level the supervisor passed on in CARBONBENCH_LOG
    events = Events(os.fdopen(events_fd, "w", buffering=1), os.getppid())
    code = 0
    try:
        job = _load_then_wait(_phases(argv), events)
        if job is not None:
            events.supervisor_pid = job.supervisor_pid
            code = run_job(job, events)
    except KeyboardInterrupt:  # a second SIGINT: stop at once, every finished row is stored
        code = 130
    except Exception as error:  # carbonbench's own: a case's errors are failed rows
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        events.send(Error(f"{type(error).__name__}: {error}", text))
        code = INTERNAL_ERROR
    _exit_now(code, events)


def _phases(argv: list[str]) -> set[str]:
    if len(argv) == 2 and argv[0] == "--phases":
        return set(filter(None, argv[1].split(",")))
    if argv:
        raise SystemExit(f"usage: python -m carbonbench.execution.worker [--phases P,..]: {argv}")
    return set()


def _load_then_wait(phases: set[str], events: Events) -> Job | None:
    """Import what measuring needs, say so, then read the job (None: input ended first, the
    run needs this worker no more). Its standard input is then closed: a case's code reads
    nothing meant for carbonbench."""
    begun = time.perf_counter()
    from carbonbench.execution import runner  # noqa: F401  (torch and the models)
    from carbonbench.execution.workloads import preload

    preload(phases)
    events.send(Loaded(os.getpid(), time.perf_counter() - begun))
    line = sys.stdin.readline()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return Job.from_line(line) if line else None


def _exit_now(code: int, events: Events) -> None:
    """End the process without the interpreter's teardown: with torch (and torch._dynamo,
    which its optimizers import) loaded that takes about 0.8 s on 2 cores, in every round,
    and does nothing a run needs. By now the store and the meter are closed; the event stream,
    standard output and error and the log handlers are flushed first."""
    logging.shutdown()
    for stream in (events.stream, sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
