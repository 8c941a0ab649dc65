"""Modelled CPU and RAM power, for machines whose CPU or memory no counter covers.

CPU: P = P_idle + (P_max - P_idle) x utilisation, utilisation being the busy share of all
logical CPUs between two reads (psutil's cpu_times: busy = total - idle - iowait; on Linux the
same /proc/stat line is read in place, at a quarter of the cost). The model is linear in
utilisation, so the energy integral is exact within it.
P_max: ``cpu_tdp_w`` given by the user, else the CPU's TDP from codecarbon's bundled CPU table,
else (an unknown CPU, or a virtual machine, whose package TDP covers cores the guest does not
own) DEFAULT_W_PER_CPU per logical CPU. P_idle = IDLE_FRACTION x P_max, the floor codecarbon's
load model uses, so the two tools can be compared.
RAM: P = W_PER_GB x GB in use (total - available, as the kernel estimates it), re-read at most
every RAM_REFRESH_S since memory in use moves slowly.
Every constant, and where it came from, is returned by ``constants()``.
"""

from __future__ import annotations

import os
import platform
import re
from functools import cache
from pathlib import Path

import psutil

from carbonbench.energy.sensors.base import Component, Method, Sensor, SensorFactory
from carbonbench.errors import InputError

IDLE_FRACTION = 0.1
DEFAULT_W_PER_CPU = 5.0  # between server parts (~2-3.5 W per thread) and desktops (~6 W)
W_PER_GB = 0.375  # about 3 W per 8 GB DDR4 module, a common rule of thumb
RAM_REFRESH_S = 1.0


def cpu_name() -> str:
    """The CPU's brand string (``model name`` in /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def is_virtual_machine() -> bool:
    try:
        return " hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _normalise(name: str) -> str:
    name = re.sub(r"\((R|TM)\)|CPU|Processor|@.*$|\d+-Core", " ", name, flags=re.IGNORECASE)
    return " ".join(name.lower().split())


@cache
def _tdp_table() -> dict[str, float]:
    from carbonbench.energy.codecarbon_data import csv_rows

    tdps: dict[str, float] = {}
    for row in csv_rows("hardware", "cpu_power.csv"):
        try:
            tdps[_normalise(row["Name"])] = float(row["TDP"])
        except ValueError:  # a few rows of the table hold malformed numbers ("27.29.5")
            continue
    return tdps


def lookup_tdp(name: str) -> tuple[str, float] | None:
    """(matched name, TDP in W) from codecarbon's CPU table: an exact match of the normalised
    brand string, else the longest table entry contained in it whose model number is there too."""
    wanted = _normalise(name)
    table = _tdp_table()
    if wanted in table:
        return wanted, table[wanted]
    candidates = [
        entry
        for entry in table
        if re.search(r"\d", entry) and re.search(rf"\b{re.escape(entry)}\b", wanted)
    ]
    if not candidates:
        return None
    best = max(candidates, key=len)
    return best, table[best]


def _packages() -> int:
    try:
        ids = {
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("physical id")
        }
        return max(1, len(ids))
    except OSError:
        return 1


class ModelledCpuSensor(Sensor):
    source = "modelled-cpu"
    domains = ("cpu:modelled",)
    methods: tuple[Method, ...] = ("modelled",)
    components: tuple[Component, ...] = ("cpu",)
    additive = (True,)

    def __init__(self, cpu_tdp_w: float | None = None, idle_fraction: float = IDLE_FRACTION):
        super().__init__()
        self.cpu = cpu_name()
        self.logical_cpus = psutil.cpu_count(logical=True) or 1
        self.virtual = is_virtual_machine()
        if cpu_tdp_w is not None:
            if cpu_tdp_w <= 0:
                raise InputError(f"cpu TDP must be positive watts, got {cpu_tdp_w}")
            self.p_max, self.p_max_source = float(cpu_tdp_w), "given by the user (--cpu-tdp)"
        else:
            match = None if self.virtual else lookup_tdp(self.cpu)
            if match is not None:
                packages = _packages()
                self.p_max = match[1] * packages
                self.p_max_source = (
                    f"codecarbon CPU table: {match[0]!r} TDP {match[1]:g} W x {packages} package(s)"
                )
            else:
                why = "virtual machine" if self.virtual else "CPU not in codecarbon's table"
                self.p_max = DEFAULT_W_PER_CPU * self.logical_cpus
                self.p_max_source = (
                    f"default {DEFAULT_W_PER_CPU:g} W x {self.logical_cpus} logical CPUs ({why}); "
                    "set --cpu-tdp for a better figure"
                )
        self.idle_fraction = idle_fraction
        self.p_idle = idle_fraction * self.p_max
        try:
            self._stat: int | None = os.open("/proc/stat", os.O_RDONLY)
        except OSError:
            self._stat = None
        self._last_busy, self._last_total = self._cpu_times()
        self._last_now: float | None = None
        self._power = self.p_idle  # until the counters first move
        self._energy = 0.0

    def _cpu_times(self) -> tuple[float, float]:
        """(busy, total) CPU time, in clock ticks on Linux, seconds elsewhere."""
        if self._stat is not None:
            # "cpu  user nice system idle iowait irq softirq steal guest guest_nice"; guest time
            # is already inside user and nice, so it is left out of the total as psutil does.
            ticks = [int(v) for v in os.pread(self._stat, 256, 0).split(b"\n", 1)[0].split()[1:9]]
            total = sum(ticks)
            return total - ticks[3] - ticks[4], total
        t = psutil.cpu_times()
        total = sum(t)
        return total - t.idle - getattr(t, "iowait", 0.0), total

    def read(self, now: float) -> tuple[list[float], list[float]]:
        """Each wall-clock interval is integrated once, at the power of the utilisation the
        kernel's counters last showed: reads closer together than its 10 ms ticks (a window's
        edge just after a sample) hold the last power, so no interval is counted twice and the
        energy stays within P_idle and P_max times the time."""
        busy, total = self._cpu_times()
        elapsed = total - self._last_total
        if elapsed > 0:
            utilisation = min(max((busy - self._last_busy) / elapsed, 0.0), 1.0)
            self._power = self.p_idle + (self.p_max - self.p_idle) * utilisation
            self._last_busy, self._last_total = busy, total
        if self._last_now is not None and now > self._last_now:
            self._energy += self._power * (now - self._last_now)
        self._last_now = now if self._last_now is None else max(now, self._last_now)
        return [self._energy], [self._power]

    def constants(self) -> dict[str, object]:
        return {
            "model": "P = P_idle + (P_max - P_idle) x utilisation",
            "cpu": self.cpu,
            "logical_cpus": self.logical_cpus,
            "virtual_machine": self.virtual,
            "p_max_w": self.p_max,
            "p_max_source": self.p_max_source,
            "p_idle_w": self.p_idle,
            "idle_fraction": self.idle_fraction,
            "utilisation": "busy share of all logical CPUs (psutil.cpu_times)",
        }

    def basis(self) -> str:
        return f"P_max {self.p_max:g} W: {self.p_max_source}"

    def metadata(self) -> dict[str, object]:
        return {"devices": {"cpu:modelled": self.cpu}}

    def close(self) -> None:
        if self._stat is not None:
            os.close(self._stat)
            self._stat = None


class ModelledRamSensor(Sensor):
    source = "modelled-ram"
    domains = ("ram:modelled",)
    methods: tuple[Method, ...] = ("modelled",)
    components: tuple[Component, ...] = ("memory",)
    additive = (True,)

    def __init__(self, w_per_gb: float = W_PER_GB) -> None:
        super().__init__()
        if w_per_gb <= 0:
            raise InputError(f"RAM watts per GB must be positive, got {w_per_gb}")
        self.w_per_gb = w_per_gb
        try:  # /proc/meminfo read in place: a tenth of psutil.virtual_memory()'s cost
            self._meminfo: int | None = os.open("/proc/meminfo", os.O_RDONLY)
        except OSError:
            self._meminfo = None
        self._last_now: float | None = None
        self._last_power = self._power = 0.0
        self._read_at = 0.0
        self._energy = 0.0

    def _used_bytes(self) -> float:
        if self._meminfo is None:
            memory = psutil.virtual_memory()
            return memory.total - memory.available
        fields = {}
        for line in os.pread(self._meminfo, 256, 0).split(b"\n")[:3]:
            key, _, value = line.partition(b":")
            fields[key] = int(value.split()[0]) * 1024
        return fields[b"MemTotal"] - fields[b"MemAvailable"]

    def read(self, now: float) -> tuple[list[float], list[float]]:
        if self._last_now is None or now - self._read_at >= RAM_REFRESH_S:
            self._power, self._read_at = self.w_per_gb * self._used_bytes() / 1e9, now
        power = self._power
        if self._last_now is not None:
            self._energy += 0.5 * (power + self._last_power) * (now - self._last_now)
        self._last_now, self._last_power = now, power
        return [self._energy], [power]

    def constants(self) -> dict[str, object]:
        return {
            "model": "P = W_per_GB x GB in use",
            "w_per_gb": self.w_per_gb,
            "w_per_gb_source": "about 3 W per 8 GB DDR4 module (rule of thumb); --ram-w-per-gb",
            "refresh_s": RAM_REFRESH_S,
            "total_gb": psutil.virtual_memory().total / 1e9,
        }

    def basis(self) -> str:
        return f"{self.w_per_gb:g} W per GB in use"

    def close(self) -> None:
        if self._meminfo is not None:
            os.close(self._meminfo)
            self._meminfo = None


CPU_FACTORY = SensorFactory(
    "modelled-cpu", frozenset({"cpu"}), lambda options: ModelledCpuSensor(options.cpu_tdp_w)
)
RAM_FACTORY = SensorFactory(
    "modelled-ram",
    frozenset({"memory"}),
    lambda options: ModelledRamSensor(
        W_PER_GB if options.ram_w_per_gb is None else options.ram_w_per_gb
    ),
)
