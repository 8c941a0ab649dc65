"""Run a suite: every case warmed up, measured in repeated windows, written row by row.

A case that fails (exception, out of memory, NaN loss, timeout) becomes a ``failed`` row and the
suite goes on. Ctrl-C stops after the current window: every finished row is kept and the run is
marked ``interrupted``; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from carbonbench import __version__
from carbonbench.carbon import CarbonSettings
from carbonbench.data import target_loss
from carbonbench.errors import CarbonbenchError
from carbonbench.hardware import Hardware
from carbonbench.meter import EnergyMeter, Measurement
from carbonbench.models import build, count_parameters
from carbonbench.stats import relative_half_width
from carbonbench.store import ResultRow, Store
from carbonbench.suite import Case, Suite
from carbonbench.watchdog import Watchdog
from carbonbench.workloads import Work, Workload, make_workload

TIMELINE_POINTS = 200


class CaseFailed(Exception):
    """A case could not be measured; the message becomes the row's error.

    ``agreed``: every process of a distributed run raised it at the same point (a decision
    taken together), so the run can go on to the next case.
    """

    def __init__(self, message: str, agreed: bool = False) -> None:
        super().__init__(message)
        self.agreed = agreed


class JobFailed(RuntimeError):
    """A distributed run cannot go on: one process failed where the others cannot follow."""


@dataclass
class RunOptions:
    label: str | None = None
    corpus: str | None = None
    seed: int = 0
    cpu_tdp_w: float | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)  # stored: --resume reapplies
    resume: str | None = None  # the id of a stopped run to add the remaining cases to


class _Interrupt:
    """First Ctrl-C: finish the current window, then stop. Second: stop now."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return done.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "carbonbench": __version__}
    for name in ("torch", "numpy", "pandas", "codecarbon", "nvidia-ml-py", "psutil"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def run_metadata(meter: EnergyMeter, carbon: CarbonSettings) -> dict[str, Any]:
    """What a reader needs to interpret a run: hardware, software, sensors, constants."""
    sensors = {s.source: s.metadata() for s in meter.sensors}
    drivers = [m["driver"] for m in sensors.values() if m.get("driver")]
    return {
        **Hardware.here().to_dict(),
        "platform": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "driver": drivers[0] if drivers else None,
        "cuda": torch.version.cuda,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "torch_threads": torch.get_num_threads(),
        "sensors": {
            s.source: {
                "domains": list(s.domains),
                "methods": list(s.methods),
                "components": list(s.components),
                **sensors[s.source],
            }
            for s in meter.sensors
        },
        "sensor_constants": {s.source: s.constants() for s in meter.sensors},
        "diagnostics": [str(d) for d in meter.diagnostics],
        "carbon": carbon.to_dict(),
    }


def _downsample(m: Measurement) -> dict[str, Any]:
    stride = max(1, math.ceil(len(m.timeline.t) / TIMELINE_POINTS))
    return {
        "t": m.timeline.t[::stride],
        "watts": {d: w[::stride] for d, w in m.timeline.watts.items()},
    }


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaseFailed(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    def __init__(
        self,
        suite: Suite,
        store: Store | None,
        meter: EnergyMeter,
        carbon: CarbonSettings,
        options: RunOptions | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.suite, self.store, self.meter, self.carbon = suite, store, meter, carbon
        self.options = options or RunOptions()
        self.on_event = on_event or (lambda kind, info: None)
        self.interrupt = _Interrupt()
        self.run_id = self.new_run_id()
        self.rows: list[ResultRow] = []

    # -- the run --------------------------------------------------------------------------

    @staticmethod
    def new_run_id() -> str:
        return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]

    # -- hooks a distributed runner overrides --------------------------------------------

    rank, world_size = 0, 1

    def _device_for(self, case: Case) -> torch.device:
        return _device(case.device)

    def _prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
        """The module a step calls, when not the model itself."""
        return None

    def _scale(self, work: Work) -> Work:
        """The work of one step of the whole job."""
        return work

    def _agree(self, steps: int) -> int:
        """Steps per window, the same for every process."""
        return steps

    def _agree_flag(self, flag: bool) -> bool:
        """A decision every process takes together (stop, fail): True if any says so."""
        return flag

    def _after_failure(self, error: Exception) -> None:
        """Called once a failed case is recorded; a distributed run stops here unless every
        process failed the case together."""

    @contextmanager
    def _window(self, name: str) -> Iterator[Measurement]:
        with self.meter.window(name) as m:
            yield m

    # -- the run --------------------------------------------------------------------------

    def run(self) -> str:
        """Measure every case; returns the run's status (ok, failed or interrupted)."""
        suite = self.suite
        if self.store is not None:
            self._begin()
        status = "ok"
        limit = suite.measure.case_timeout_s + suite.measure.hang_grace_s
        try:
            with self.interrupt.installed(), Watchdog(limit, self._hung) as watchdog:
                if suite.measure.idle_baseline_s > 0:
                    self.on_event("idle", {"seconds": suite.measure.idle_baseline_s})
                    self.meter.idle_baseline(suite.measure.idle_baseline_s)
                for index, case in enumerate(suite.cases):
                    if self._agree_flag(self.interrupt.requested):
                        status = "interrupted"
                        break
                    self.on_event("case", {"index": index, "case": case})
                    with watchdog.watching(case):
                        ok = self._case(case)
                    if not ok:
                        status = "failed" if status == "ok" else status
                if self.interrupt.requested:
                    status = "interrupted"
        except KeyboardInterrupt:
            status = "interrupted"
        except BaseException:
            status = "failed"  # e.g. the store could not be written: say so, then raise
            raise
        finally:
            if self.store is not None:
                self._end(status)
        return status

    def _stored_options(self) -> dict[str, Any]:
        """What else decides the numbers, for a reader and for ``--resume``."""
        o = self.options
        return {"corpus": o.corpus, "cpu_tdp_w": o.cpu_tdp_w, "seed": o.seed}

    def _hung(self, case: Case, elapsed: float) -> None:
        """From the watchdog's thread: the case is stuck inside a step and the process is about
        to end. Record it, with this thread's own connection to the store."""
        m = self.suite.measure
        message = (
            f"hung: one step still running after {elapsed:.0f} s (case_timeout_s "
            f"{m.case_timeout_s:g} + hang_grace_s {m.hang_grace_s:g}); the run stopped here"
        )
        where = ""
        if self.store is not None:
            where = f"; finished rows are in {self.store.path}"
            with Store(self.store.path) as store:
                store.add_row(self._row(case, 0, status="failed", error=message))
                store.end_run(self.run_id, "failed", _now())
        print(f"\ncarbonbench: error: {case.case_id} {message}{where}", file=sys.stderr)

    def _begin(self) -> None:
        suite = self.suite
        # with the host: whether a run marked running still has a process at it
        process = {"pid": os.getpid(), "started": time.time()}
        if self.options.resume is not None:
            self.run_id = self.options.resume
            before = self.store.run(self.run_id)
            self.store.reopen_run(self.run_id, before.metadata | {"process": process})
            return
        self.store.begin_run(
            self.run_id,
            label=self.options.label,
            suite_name=suite.name,
            suite_source=suite.source,
            suite_text=suite.text,
            started_at=_now(),
            metadata=run_metadata(self.meter, self.carbon)
            | {
                "world_size": self.world_size,
                "filters": self.options.filters,
                "options": self._stored_options(),
                "process": process,
            },
        )

    def _end(self, status: str) -> None:
        metadata = run_metadata(self.meter, self.carbon)
        metadata["world_size"] = self.world_size
        metadata["idle_w"] = self.meter.idle_w
        metadata["skipped"] = list(self.suite.skipped)
        metadata["sampler"] = {
            "interval_s": self.meter.interval_s,
            "reads": self.meter.sampler_reads,
            "cpu_s": self.meter.sampler_cpu_s,
        }
        metadata["filters"] = self.options.filters
        metadata["options"] = self._stored_options()
        if self.options.resume is not None:  # the status of the whole run, earlier rows too
            before = self.store.run(self.run_id)
            metadata["resumed_at"] = [*before.metadata.get("resumed_at", []), _now()]
            if status == "ok" and any(r.status != "ok" for r in self.store.rows(self.run_id)):
                status = "failed"
        self.store.end_run(self.run_id, status, _now(), metadata)

    def _row(self, case: Case, repeat: int, **values: Any) -> ResultRow:
        return ResultRow(
            run_id=self.run_id,
            case_id=case.case_id,
            repeat=repeat,
            **dataclasses.asdict(case),  # arch, size, impl, phase, batch, seq_len, device, dtype
            pue=self.carbon.pue,
            intensity_g_per_kwh=self.carbon.intensity.g_per_kwh,
            intensity_source=self.carbon.intensity.source,
            intensity_year=self.carbon.intensity.year,
            intensity_region=self.carbon.intensity.region,
            created_at=_now(),
            world_size=self.world_size,
            **values,
        )

    def _save(self, row: ResultRow) -> None:
        if self.store is None:  # a distributed run's other processes: rank 0 writes
            return
        self.store.add_row(row)
        self.rows.append(row)
        self.on_event("row", {"row": row})

    def _case(self, case: Case) -> bool:
        """Measure one case; False if it failed (its failure is recorded as a row)."""
        started = time.perf_counter()
        params = None
        try:
            device = self._device_for(case)
            torch.manual_seed(self.options.seed)
            model = build(case.arch, case.size, case.impl).to(device)
            params = count_parameters(model)
            new_tokens = self.suite.measure.new_tokens
            workload = make_workload(
                model,
                case.phase,
                batch=case.batch,
                seq_len=case.seq_len,
                device=device,
                dtype=case.dtype,
                corpus=self.options.corpus,
                new_tokens=new_tokens,
                seed=self.options.seed
                + self.rank,  # each process of a distributed run its own data
                forward=self._prepare(model, device),
            )
            workload.work = self._scale(workload.work)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if case.phase == "train-to-target":
                self._to_target(case, workload, device, params, started)
            else:
                self._repeats(case, workload, device, params, started)
            return True
        except Exception as error:  # recorded, and the suite goes on
            if isinstance(error, torch.cuda.OutOfMemoryError):
                message = f"out of memory: {str(error).splitlines()[0]}"
                torch.cuda.empty_cache()
            elif isinstance(error, CaseFailed | CarbonbenchError):
                message = str(error)
            else:
                message = f"{type(error).__name__}: {error}"
            self._save(self._row(case, 0, status="failed", error=message, params=params))
            self._after_failure(error)
            return False

    def _check_time(self, started: float, between_windows: bool = False) -> None:
        """Fail the case once it has run past its timeout. A distributed run checks only
        between windows, where every process is, and decides with the others."""
        limit = self.suite.measure.case_timeout_s
        late = time.perf_counter() - started > limit
        if between_windows:
            late = self._agree_flag(late)
        elif self.world_size > 1:
            return
        if late:
            message = f"timed out: the case ran past case_timeout_s = {limit:g} s"
            raise CaseFailed(message, agreed=between_windows)

    def _steps(self, workload: Workload, steps: int, device, started: float) -> list:
        losses = []
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
        if self._agree_flag(not bool(torch.isfinite(stacked).all())):
            raise CaseFailed("loss became NaN or infinite: training diverged", agreed=True)
        return float(stacked.mean())

    def _measured_row(
        self,
        case: Case,
        repeat: int,
        m: Measurement,
        steps: int,
        work: Work,
        params: int | None,
        device: torch.device,
        loss: float | None,
        **extra_values: Any,
    ) -> ResultRow:
        energy = m.total_energy_j
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return self._row(
            case,
            repeat,
            params=params,
            steps=steps,
            samples=steps * work.samples,
            tokens=steps * work.tokens,
            src_tokens=steps * work.src_tokens,
            flops=steps * work.flops,
            flops_method=work.flops_method,
            duration_s=m.duration_s,
            energy_j=energy,
            energy_by_domain=m.energy_j,
            method_by_domain=m.method,
            additive_by_domain=m.additive,
            idle_w=m.idle_w,
            dynamic_energy_j=m.total_dynamic_energy_j,
            loss=loss,
            kwh=self.carbon.kwh(energy),
            co2e_g=self.carbon.co2e_g(energy),
            peak_memory_bytes=peak,
            timeline=_downsample(m),
            **extra_values,
        )

    def _repeats(self, case, workload: Workload, device, params, started) -> None:
        measure = self.suite.measure
        with self._window(f"{case.case_id}/warmup") as warm:
            warm_steps = max(1, measure.warmup_steps)
            self._finite_loss(self._steps(workload, warm_steps, device, started))
        step_s = warm.duration_s / warm_steps
        steps = max(1, math.ceil(measure.min_window_s / step_s)) if step_s > 0 else 1
        steps = self._agree(steps)
        warmup = {
            "steps": warm_steps,
            "duration_s": warm.duration_s,
            "energy_j": warm.total_energy_j,
            "timeline": _downsample(warm),
        }
        per_token: list[float] = []
        repeat = 0
        while True:
            self._check_time(started, between_windows=True)
            with self._window(f"{case.case_id}/r{repeat}") as m:
                losses = self._steps(workload, steps, device, started)
            loss = self._finite_loss(losses)
            extra = {"warmup": warmup} if repeat == 0 else {}
            row = self._measured_row(
                case, repeat, m, steps, workload.work, params, device, loss, extra=extra
            )
            self._save(row)
            per_token.append(row.energy_j / max(row.tokens, 1))
            repeat += 1
            if self._agree_flag(
                self.interrupt.requested or not self._more(per_token, repeat, started)
            ):
                return

    def _more(self, per_token: list[float], repeat: int, started: float) -> bool:
        m = self.suite.measure
        if repeat < m.repeats:
            return True
        if m.ci_half_width is None or repeat >= m.max_repeats:
            return False
        if m.budget_s is not None and time.perf_counter() - started > m.budget_s:
            return False
        return relative_half_width(per_token) > m.ci_half_width

    def _to_target(self, case, workload: Workload, device, params, started) -> None:
        t = self.suite.target
        goal = target_loss(workload.entropy_rate, t.loss_factor, t.loss)
        assert workload.evaluate is not None
        steps, reached, val = 0, False, math.inf
        with self._window(f"{case.case_id}/to-target") as m:
            losses = []
            while steps < t.max_steps and time.perf_counter() - started < t.max_seconds:
                losses += self._steps(workload, 1, device, started)
                steps += 1
                if steps % t.eval_every == 0:
                    self._finite_loss(losses[-t.eval_every :])
                    val = workload.evaluate()
                    if val <= goal:
                        reached = True
                        break
                if self.interrupt.requested:
                    break
        row = self._measured_row(
            case,
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
        self._save(row)
