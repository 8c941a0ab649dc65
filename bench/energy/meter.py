"""EnergyMeter: energy per domain over named windows, from every sensor, with power timelines.

One daemon thread samples every sensor each ``interval_s``: it keeps the power timeline, and
its reads are what let counters that wrap (RAPL) be unwrapped. Window edges read every sensor
again, after synchronising the GPU when torch uses one, so a window's energy is the difference
of two reads taken exactly at its edges, not the sum of whatever samples fell inside.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from carbonbench.energy.sensors import Detection, Diagnostic, Method, Sensor, detect_sensors
from carbonbench.errors import InputError

MIN_INTERVAL_S, MAX_INTERVAL_S = 0.01, 10.0
MAX_SLEEP_S = 0.5  # the sampler's longest sleep: how long close() can wait for it


@dataclass
class Timeline:
    """Power samples inside a window: ``t`` in seconds from the window's start."""

    t: list[float] = field(default_factory=list)
    watts: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Measurement:
    """What one window measured. Filled when the window ends."""

    name: str
    started_at: float = 0.0  # Unix time of the window's start
    duration_s: float = 0.0
    energy_j: dict[str, float] = field(default_factory=dict)
    method: dict[str, Method] = field(default_factory=dict)
    additive: dict[str, bool] = field(default_factory=dict)  # False: overlaps other domains
    idle_w: dict[str, float] | None = None  # from the meter's idle baseline, if measured
    timeline: Timeline = field(default_factory=Timeline)
    samples: int = 0  # sampler reads inside the window
    constants: dict[str, dict[str, object]] = field(default_factory=dict)  # per source
    diagnostics: list[str] = field(default_factory=list)  # trouble met during the window
    complete: bool = False

    @property
    def total_energy_j(self) -> float:
        """Sum over the domains that add up (psys and the like are left out)."""
        return sum(e for d, e in self.energy_j.items() if self.additive.get(d, True))

    @property
    def dynamic_energy_j(self) -> dict[str, float] | None:
        """Energy above idle: total - idle power x duration, per domain."""
        if self.idle_w is None:
            return None
        return {d: e - self.idle_w.get(d, 0.0) * self.duration_s for d, e in self.energy_j.items()}

    @property
    def total_dynamic_energy_j(self) -> float | None:
        dynamic = self.dynamic_energy_j
        if dynamic is None:
            return None
        return sum(e for d, e in dynamic.items() if self.additive.get(d, True))

    @property
    def power_w(self) -> dict[str, float]:
        """Average power per domain over the window."""
        if self.duration_s <= 0:
            return dict.fromkeys(self.energy_j, 0.0)
        return {d: e / self.duration_s for d, e in self.energy_j.items()}


@dataclass
class _Open:
    measurement: Measurement
    start: float  # perf_counter
    energy: list[float]
    diagnostics_seen: int


class _Buffer:
    """Rows of (time, watts per domain) in one flat array of doubles: one C call per sample."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.data = array("d")

    def append(self, now: float, watts: Sequence[float]) -> None:
        self.data.append(now)
        self.data.extend(watts)

    def clear(self) -> None:
        del self.data[:]

    def between(self, start: float, end: float) -> np.ndarray:
        rows = np.frombuffer(self.data, dtype=np.float64).reshape(-1, self.columns).copy()
        lo, hi = np.searchsorted(rows[:, 0], [start, end], side="left")
        return rows[lo:hi]


def _synchronize() -> None:
    """Wait for queued GPU work, if torch is in use with CUDA, so counters see all of it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        for device in range(torch.cuda.device_count()):
            torch.cuda.synchronize(device)


class EnergyMeter:
    """Measure energy per domain over windows: ``with meter.window("train") as m: ...``."""

    def __init__(self, sensors: Sequence[Sensor] | None = None, interval_s: float = 0.1) -> None:
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise InputError(
                f"interval_s must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S} s, "
                f"got {interval_s}"
            )
        detection = Detection(list(sensors)) if sensors is not None else detect_sensors()
        self.sensors = detection.sensors
        self.diagnostics: list[Diagnostic] = detection.diagnostics
        self.domains = [d for s in self.sensors for d in s.domains]
        if len(set(self.domains)) != len(self.domains):
            raise InputError(f"two sensors report the same domain: {self.domains}")
        self.methods: dict[str, Method] = {
            d: m for s in self.sensors for d, m in zip(s.domains, s.methods, strict=True)
        }
        self.additive = {
            d: a for s in self.sensors for d, a in zip(s.domains, s.additive, strict=True)
        }
        self.interval_s = interval_s
        self.idle_w: dict[str, float] | None = None
        self._lock = threading.Lock()
        self._buffer = _Buffer(1 + len(self.domains))
        self._open: dict[str, _Open] = {}
        self._sampler_reads = 0
        self._last_power: list[float] = [0.0] * len(self.domains)
        self._sampler_cpu_s = self._read_cpu_s = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="carbonbench-sampler", daemon=True)
        self._read_locked(time.perf_counter())  # sensors' first read: their zero point
        self._thread.start()

    # -- sampling -------------------------------------------------------------------------

    def _read_locked(self, now: float) -> tuple[list[float], list[float]]:
        energy: list[float] = []
        power: list[float] = []
        for sensor in self.sensors:
            e, p = sensor.read(now)
            energy.extend(e)
            power.extend(p)
        return energy, power

    def _run(self) -> None:
        # A plain sleep is the cheapest timed wait (on a KVM guest a lock's timed wait costs
        # about 0.035 ms more CPU per wake-up); close() checks in under the lock, and long
        # intervals sleep in slices so that close() never waits long for the thread to end.
        deadline = time.perf_counter()
        while True:
            deadline += self.interval_s
            delay = deadline - time.perf_counter()
            if delay < 0:  # fell behind (a suspended process): skip, don't burst
                deadline, delay = time.perf_counter(), 0.0
            while delay > MAX_SLEEP_S and not self._closed:
                time.sleep(MAX_SLEEP_S)
                delay = deadline - time.perf_counter()
            if not self._closed:
                time.sleep(max(0.0, delay))
            started = time.thread_time()
            with self._lock:
                if self._closed:
                    return
                now = time.perf_counter()
                _, power = self._read_locked(now)
                self._buffer.append(now, power)
                self._last_power = power
                self._sampler_reads += 1
            self._sampler_cpu_s = time.thread_time()  # waits and wake-ups included
            self._read_cpu_s += self._sampler_cpu_s - started

    @property
    def sampler_cpu_s(self) -> float:
        """CPU seconds the sampler thread has used, its waits and wake-ups included."""
        return self._sampler_cpu_s

    @property
    def read_cpu_s(self) -> float:
        """CPU seconds the sampler spent reading sensors and storing samples."""
        return self._read_cpu_s

    def latest_power(self) -> dict[str, float]:
        """Watts per domain at the sampler's last read (for live displays)."""
        return dict(zip(self.domains, self._last_power, strict=True))

    @property
    def sampler_reads(self) -> int:
        return self._sampler_reads

    # -- windows --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the meter is closed: measure inside its `with` block")

    def begin_window(self, name: str) -> Measurement:
        """Open window ``name``; the returned Measurement is filled by ``end_window(name)``."""
        _synchronize()
        with self._lock:
            self._check_open()
            if name in self._open:
                raise ValueError(f"window {name!r} is already open")
            now = time.perf_counter()
            energy, _ = self._read_locked(now)
            measurement = Measurement(name, started_at=time.time())
            seen = sum(len(s.diagnostics) for s in self.sensors)
            self._open[name] = _Open(measurement, now, energy, seen)
        return measurement

    def end_window(self, name: str) -> Measurement:
        _synchronize()
        with self._lock:
            self._check_open()
            try:
                window = self._open.pop(name)
            except KeyError:
                raise ValueError(f"no open window named {name!r}") from None
            now = time.perf_counter()
            energy, _ = self._read_locked(now)
            rows = self._buffer.between(window.start, now)
            if not self._open:
                self._buffer.clear()  # nothing else needs the timeline: keep memory bounded
        m = window.measurement
        m.duration_s = now - window.start
        m.energy_j = {
            d: end - start
            for d, start, end in zip(self.domains, window.energy, energy, strict=True)
        }
        m.method = dict(self.methods)
        m.additive = dict(self.additive)
        m.idle_w = dict(self.idle_w) if self.idle_w is not None else None
        m.samples = len(rows)
        m.timeline = Timeline(
            t=(rows[:, 0] - window.start).tolist(),
            watts={d: rows[:, 1 + i].tolist() for i, d in enumerate(self.domains)},
        )
        m.constants = {s.source: s.constants() for s in self.sensors}
        diagnostics = [str(d) for s in self.sensors for d in s.diagnostics]
        m.diagnostics = diagnostics[window.diagnostics_seen :]
        m.complete = True
        return m

    def peek(self, name: str) -> Measurement:
        """Window ``name`` so far, left open: energy per domain and duration up to now, read at
        this edge as ``end_window`` would (no timeline: that stays with the window). For
        running totals, such as a training loop's logs; ``complete`` is False."""
        _synchronize()
        with self._lock:
            self._check_open()
            window = self._open.get(name)
            if window is None:
                raise ValueError(f"no open window named {name!r}")
            now = time.perf_counter()
            energy, _ = self._read_locked(now)
        return Measurement(
            name,
            started_at=window.measurement.started_at,
            duration_s=now - window.start,
            energy_j={
                d: end - start
                for d, start, end in zip(self.domains, window.energy, energy, strict=True)
            },
            method=dict(self.methods),
            additive=dict(self.additive),
            idle_w=dict(self.idle_w) if self.idle_w is not None else None,
        )

    @contextmanager
    def window(self, name: str) -> Iterator[Measurement]:
        measurement = self.begin_window(name)
        try:
            yield measurement
        finally:
            self.end_window(name)

    def idle_baseline(self, seconds: float = 5.0) -> dict[str, float]:
        """Average power per domain while this process does nothing for ``seconds``.

        Later measurements carry it, and with it their dynamic (above-idle) energy.
        """
        if seconds <= 0:
            raise InputError(f"idle baseline needs a positive duration, got {seconds}")
        with self.window("idle-baseline") as m:
            time.sleep(seconds)
        self.idle_w = m.power_w
        return dict(self.idle_w)

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop sampling, wait for the sampler to end (at most one tick or MAX_SLEEP_S), and
        release the sensors. A thread left running would meet the interpreter's shutdown."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not threading.current_thread():
            self._thread.join()
        for sensor in self.sensors:
            sensor.close()

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
