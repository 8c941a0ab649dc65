"""A worker process: one round of a run, started by the supervisor (``carbonbench.execution.supervisor``).

``python -m carbonbench.execution.worker JOB.json`` measures the job's cases in the order given, writing
every row to the store itself (so a row finished is a row kept, whatever happens to either
process), and tells the supervisor what it does as JSON lines on its standard output: ``ready``
(the sensors, the idle baseline), ``case``, ``row``, ``done``, ``finished``. Anything else it
or the code it runs prints goes to standard error, which the supervisor keeps for the
post-mortem of a worker that dies. SIGINT (forwarded by the supervisor) stops it after the
current window; it ends itself when the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from carbonbench.energy.carbon import CarbonSettings

PR_SET_PDEATHSIG = 1


@dataclass
class Job:
    """What one worker measures, as the supervisor writes it (JSON)."""

    db: str
    run_id: str
    round: int
    cases: list[str]  # case ids, in the order to measure them
    suite_text: str
    suite_source: str
    carbon: dict[str, Any]
    options: dict[str, Any]  # corpus, seed, cpu_tdp_w
    components: list[str]  # what to measure (no gpu when no case uses one)
    idle_w: dict[str, float] | None = None  # measured by an earlier round; else measure it
    flops: dict[str, list[int]] = field(default_factory=dict)  # counted by earlier rounds
    supervisor_pid: int = 0

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def read(cls, path: Path) -> Job:
        return cls(**json.loads(path.read_text()))


class Events:
    """JSON lines to the supervisor; a supervisor that has gone ends this process."""

    def __init__(self, stream: TextIO, supervisor_pid: int) -> None:
        self.stream, self.supervisor_pid = stream, supervisor_pid

    def send(self, event: str, **data: Any) -> None:
        self.orphaned_exit()
        try:
            self.stream.write(json.dumps({"event": event, **data}, default=str) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            os._exit(1)

    def orphaned_exit(self) -> None:
        """Stop before writing anything more once the supervisor is gone: ``--resume`` will
        measure what is left, and two processes must not write the same case."""
        if self.supervisor_pid and os.getppid() != self.supervisor_pid:
            os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the supervisor dies, hung or not."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_job(job: Job, events: Events) -> int:
    from carbonbench.energy.meter import EnergyMeter
    from carbonbench.energy.provenance import measured_by
    from carbonbench.energy.sensors import SensorOptions, detect_sensors
    from carbonbench.execution.runner import CaseRunner, Interrupt, RunOptions
    from carbonbench.models import flops
    from carbonbench.results.recorder import Recorder
    from carbonbench.results.store import Store
    from carbonbench.suites.suite import parse

    flops.learn(job.flops)
    suite = parse(job.suite_text, job.suite_source)
    by_id = {c.case_id: c for c in suite.cases}
    cases = [by_id[case_id] for case_id in job.cases]
    options = RunOptions(**job.options)
    detection = detect_sensors(
        SensorOptions(cpu_tdp_w=options.cpu_tdp_w), components=set(job.components)
    )
    interrupt = Interrupt()
    with (
        Store(job.db, create=False) as store,
        interrupt.installed(),
        EnergyMeter(detection.sensors, suite.measure.interval_s) as meter,
    ):
        meter.diagnostics = detection.diagnostics
        if job.idle_w is not None:
            meter.idle_w = dict(job.idle_w)
        elif suite.measure.idle_baseline_s > 0:
            events.send("idle", seconds=suite.measure.idle_baseline_s)
            meter.idle_baseline(suite.measure.idle_baseline_s)
        events.send("ready", metadata=measured_by(meter), idle_w=meter.idle_w, pid=os.getpid())

        def on_row(row) -> None:
            watts = row.energy_j / row.duration_s if row.duration_s > 0 else None
            events.send(
                "row",
                case_id=row.case_id,
                status=row.status,
                error=row.error,
                repeat=row.repeat,
                watts=watts,
            )

        recorder = Recorder(
            store,
            job.run_id,
            CarbonSettings.from_dict(job.carbon),
            on_row=on_row,
            before_save=events.orphaned_exit,
        )
        runner = CaseRunner(suite, meter, recorder, options, interrupt=interrupt)
        for case in cases:
            if interrupt.requested:
                break
            events.send("case", case_id=case.case_id)
            ok = runner.run_case(case, job.round)
            events.send("done", case_id=case.case_id, ok=ok, flops=flops.known())
        sampler = {"reads": meter.sampler_reads, "cpu_s": meter.sampler_cpu_s}
        events.send(
            "finished",
            interrupted=interrupt.requested,
            sampler=sampler | {"interval_s": meter.interval_s},
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    # events go out on the standard output this process was given; everything else printed
    # (by this package, torch or the user's code) goes to standard error
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    job = Job.read(Path(argv[0]))
    events = Events(os.fdopen(events_fd, "w", buffering=1), job.supervisor_pid)
    return run_job(job, events)


if __name__ == "__main__":
    raise SystemExit(main())
