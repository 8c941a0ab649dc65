"""Measuring users' own work: a block of their code (``carbonbench.track``) or any command
(``carbonbench measure -- CMD``), through the same meter and into the same store as suites.

    with carbonbench.track("preprocess", db="results.sqlite") as t:
        preprocess()
    print(t.measurement.total_energy_j, t.measurement.method)

    @carbonbench.track("train-epoch", work=tokens, unit="token")
    def train_epoch(): ...

Each use stores a run (its kind, ``block`` or ``command``, in its metadata) with one row, the
whole measurement: energy per domain with its method, time, the power timeline, CO2e, and the
work when given, so ``runs``, ``export``, ``report`` and ``compare`` read it like any run.
Offline, always: the carbon intensity comes from codecarbon's bundled tables.
"""

from __future__ import annotations

import contextlib
from contextlib import ContextDecorator
from pathlib import Path
from typing import Any

from carbonbench.energy.carbon import CarbonSettings, resolve
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.energy.provenance import host
from carbonbench.results.metadata import RunMetadata
from carbonbench.results.recorder import Recorder
from carbonbench.results.runlog import RunLog, new_run_id
from carbonbench.results.store import DEFAULT_DB, ResultRow, Store
from carbonbench.signals import StopRequest
from carbonbench.suites.case import Case


class Tracker(ContextDecorator):
    """Measures what runs inside it (a ``with`` block, or each call of a decorated function)."""

    def __init__(
        self,
        label: str,
        *,
        db: str | Path | None = DEFAULT_DB,
        work: float | None = None,
        unit: str = "unit",
        carbon: CarbonSettings | None = None,
        interval_s: float = 0.1,
        kind: str = "block",
        details: dict[str, Any] | None = None,
        mlflow: bool = False,
    ) -> None:
        """``db`` None: measure without storing. ``work``: units of work done inside (tokens,
        samples, ...), for energy per unit. ``mlflow``: log the figures to the active MLflow
        run, or a new one named ``label`` (the mlflow extra; carbonbench.integrations.mlflow)."""
        if mlflow:
            from carbonbench.integrations.mlflow import require_mlflow

            require_mlflow()  # refused before the work, not after it
        self.mlflow = mlflow
        self.label, self.db, self.work, self.unit = label, db, work, unit
        self.carbon = carbon
        self.interval_s, self.kind, self.details = interval_s, kind, details or {}
        self.measurement: Measurement | None = None
        self.run_id: str | None = None
        self.row: ResultRow | None = None
        self._meter: EnergyMeter | None = None

    def __enter__(self) -> Tracker:
        self.carbon = self.carbon or resolve()
        self._meter = EnergyMeter(interval_s=self.interval_s)
        self._meter.begin_window(self.label)
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        assert self._meter is not None
        try:
            self.measurement = self._meter.end_window(self.label)
            if error is not None and not isinstance(error, KeyboardInterrupt):
                self.details.setdefault("error", f"{type(error).__name__}: {error}")
            if self.db is not None:
                self._store(self.details.get("error"))
            if self.mlflow:
                from carbonbench.integrations.mlflow import log_tracker

                log_tracker(self)
        finally:
            self._meter.close()
            self._meter = None

    def _store(self, error: str | None) -> None:
        from carbonbench.execution.runtime import measured_by

        assert self.measurement is not None and self.carbon is not None and self._meter
        m = self.measurement
        self.run_id = new_run_id()
        # the label names the case: two runs of the same label are compared with each other
        case = Case(self.label, "-", "-", self.kind, 0, 0, "host", "-")
        details = {**host(), **measured_by(self._meter), **self.details}
        known = RunMetadata.fields()
        metadata = RunMetadata(
            **RunMetadata.fields_in(details),
            kind=self.kind,
            carbon=self.carbon.to_dict(),
            work=self.work,
            unit=self.unit,
            extra={k: v for k, v in self.details.items() if k not in known},
        )
        # the measurement is real either way (the row is ok); the run says how the work ended
        with Store(self.db) as store:
            record = RunLog.begin(
                store,
                self.run_id,
                label=self.label,
                suite_name=self.kind,
                suite_source=self.details.get("command_line", self.label),
                suite_text="",
                metadata=metadata,
            )
            recorder = Recorder(store, self.run_id, self.carbon)
            row = recorder.measured(
                case,
                0,
                0,
                m,
                steps=1,
                samples=0,
                tokens=int(self.work) if self.work else 0,
                extra={
                    "unit": self.unit,
                    "work": self.work,
                    "label": self.label,
                    "ended": error or "ok",
                    **{k: self.details[k] for k in ("exit_status",) if k in self.details},
                },
            )
            recorder.save(row)
            self.row = row
            record.end("failed" if error else "ok")


def track(label: str, **options: Any) -> Tracker:
    """Measure a block (``with``) or a function (decorator): see ``Tracker``."""
    return Tracker(label, **options)


def run_command(
    argv: list[str],
    *,
    label: str | None,
    db: str | Path | None,
    work: float | None,
    unit: str,
    carbon: CarbonSettings,
    interval_s: float,
) -> tuple[int, Tracker]:
    """Run ``argv`` to its end, measured; (its exit status, the tracker). Its output passes
    through untouched. SIGINT and SIGTERM sent to carbonbench go to the command (it runs in its
    own process group, so a terminal's Ctrl-C reaches it once, through here) and the
    measurement so far is kept."""
    import shlex
    import signal
    import subprocess

    line = shlex.join(argv)
    details: dict[str, Any] = {"command": argv, "command_line": line}
    tracker = Tracker(
        label or Path(argv[0]).name,
        db=db,
        work=work,
        unit=unit,
        carbon=carbon,
        interval_s=interval_s,
        kind="command",
        details=details,
    )
    with tracker:
        try:
            child = subprocess.Popen(argv, process_group=0)
        except OSError as error:
            details["error"] = f"cannot start {argv[0]!r}: {error.strerror}"
            raise
        forwarded: list[str] = []

        def forward(name: str) -> None:  # the first signal and every one after it
            forwarded.append(name)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.Signals[name])

        with StopRequest(on_first=forward, on_second=forward).installed():
            status = child.wait()
        exit_status = 128 - status if status < 0 else status  # a signal: 128 + its number
        details.update(exit_status=exit_status, signals=forwarded)
        if exit_status != 0:
            details["error"] = f"{line} exited with status {exit_status}"
    return exit_status, tracker


def store_measurement(
    label: str,
    meter: EnergyMeter,
    measurement: Measurement,
    *,
    error: str | None = None,
    **options: Any,
) -> Tracker:
    """Store a measurement taken elsewhere (a trainer's callback opens and ends its own window)
    exactly as ``track()`` stores a block's: one run, one row. ``options`` as for ``Tracker``;
    the returned tracker has the ``run_id`` and ``row``."""
    tracker = Tracker(label, **options)
    tracker.carbon = tracker.carbon or resolve()
    tracker.measurement, tracker._meter = measurement, meter
    if error is not None:
        tracker.details.setdefault("error", error)
    try:
        if tracker.db is not None:
            tracker._store(tracker.details.get("error"))
    finally:
        tracker._meter = None  # the caller's meter: closing it is the caller's
    return tracker
