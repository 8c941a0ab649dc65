"""CPU package and DRAM energy from RAPL counters through Linux powercap (Intel and AMD).

Layout under the powercap root (``CARBONBENCH_POWERCAP_ROOT``, default /sys/class/powercap):
``intel-rapl:N/`` is package N (``name`` = ``package-N``) or, on some machines, ``psys`` (the
whole platform); its subzones ``intel-rapl:N/intel-rapl:N:M/`` are ``core``, ``uncore`` and
``dram``. The package already contains core and uncore, so only packages and dram are added up;
psys is reported apart. Top-level ``intel-rapl:N:M`` links to the subzones are skipped.
``energy_uj`` wraps at ``max_energy_range_uj``; reading at least once per wrap period (minutes
at full load) lets each wrap be added back.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from carbonbench.energy.sensors.base import (
    Component,
    Diagnostic,
    Method,
    Sensor,
    SensorFactory,
    SensorUnavailable,
)

COMPONENTS = ("cpu", "memory")

DEFAULT_ROOT = "/sys/class/powercap"
PERMISSION_FIX = (
    "energy_uj is readable by root only since the 2020 PLATYPUS fix (CVE-2020-8694). "
    "Run as root, or allow reading: sudo chmod a+r {root}/intel-rapl:*/energy_uj "
    "{root}/intel-rapl:*/intel-rapl:*/energy_uj (until reboot), or persistently a udev rule "
    '\'SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r %S%p/energy_uj"\' in '
    "/etc/udev/rules.d/99-carbonbench-rapl.rules."
)


def powercap_root() -> Path:
    return Path(os.environ.get("CARBONBENCH_POWERCAP_ROOT", DEFAULT_ROOT))


@dataclass
class _Zone:
    domain: str
    path: Path
    fd: int
    max_range_uj: int
    first_uj: int
    last_uj: int
    wraps: int = 0


def _read_int(fd: int) -> int:
    return int(os.pread(fd, 32, 0))


class RaplSensor(Sensor):
    source = "rapl"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__()
        self.root = Path(root) if root is not None else powercap_root()
        self._zones: list[_Zone] = []
        try:
            for domain, zone_dir in self._discover():
                self._zones.append(self._open(domain, zone_dir))
        except BaseException:
            self.close()
            raise
        if not self._zones:
            raise SensorUnavailable(
                Diagnostic(
                    "rapl",
                    f"no RAPL package zones (intel-rapl:N) under {self.root}.",
                    "Run on bare-metal Linux with the intel_rapl (Intel) or "
                    "amd_energy/rapl (AMD) driver loaded; VMs rarely expose RAPL.",
                    components=COMPONENTS,
                )
            )
        self.domains = tuple(z.domain for z in self._zones)
        self.methods: tuple[Method, ...] = ("counter",) * len(self._zones)
        self.components: tuple[Component, ...] = tuple(
            "platform" if d == "cpu:psys" else "memory" if ":dram-" in d else "cpu"
            for d in self.domains
        )
        self.additive = tuple(c != "platform" for c in self.components)
        if "memory" not in self.components:
            self.diagnostics.append(
                Diagnostic(
                    "rapl",
                    "no RAPL dram zone (common on AMD): memory is modelled.",
                    components=("memory",),
                )
            )
        self._last_now: float | None = None
        self._last_j = [0.0] * len(self._zones)

    def _discover(self) -> list[tuple[str, Path]]:
        if not self.root.is_dir():
            raise SensorUnavailable(
                Diagnostic(
                    "rapl",
                    f"powercap directory {self.root} does not exist: no RAPL "
                    "counters here (a VM, a container without /sys, or not Linux).",
                    "On bare metal, load the intel_rapl_common module; in a container, "
                    "mount /sys/class/powercap or set CARBONBENCH_POWERCAP_ROOT.",
                    components=COMPONENTS,
                )
            )
        found: list[tuple[str, Path]] = []
        for top in sorted(self.root.iterdir(), key=lambda p: p.name):
            match = re.fullmatch(r"intel-rapl:(\d+)", top.name)
            if not match:
                continue  # intel-rapl:N:M links and other control types
            name = (top / "name").read_text().strip()
            if name == "psys":
                found.append(("cpu:psys", top))
                continue
            package = name.removeprefix("package-") if name.startswith("package-") else match[1]
            found.append((f"cpu:package-{package}", top))
            for sub in sorted(top.glob(f"intel-rapl:{match[1]}:*"), key=lambda p: p.name):
                if (sub / "name").read_text().strip() == "dram":
                    found.append((f"cpu:dram-{package}", sub))
        return found

    def _open(self, domain: str, zone_dir: Path) -> _Zone:
        path = zone_dir / "energy_uj"
        try:
            fd = os.open(path, os.O_RDONLY)
            value = _read_int(fd)
        except PermissionError:
            raise SensorUnavailable(
                Diagnostic(
                    "rapl",
                    f"permission denied reading {path}.",
                    PERMISSION_FIX.format(root=self.root),
                    components=COMPONENTS,
                )
            ) from None
        max_range = int((zone_dir / "max_energy_range_uj").read_text())
        return _Zone(domain, path, fd, max_range, value, value)

    def read(self, now: float) -> tuple[list[float], list[float]]:
        energy = []
        for zone in self._zones:
            value = _read_int(zone.fd)
            if value < zone.last_uj:  # wrapped since the last read
                zone.wraps += 1
            zone.last_uj = value
            energy.append((value - zone.first_uj + zone.wraps * zone.max_range_uj) / 1e6)
        if self._last_now is None or now <= self._last_now:
            power = [0.0] * len(energy)
        else:
            dt = now - self._last_now
            power = [(e - last) / dt for e, last in zip(energy, self._last_j, strict=True)]
        self._last_now, self._last_j = now, energy
        return energy, power

    def constants(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "zones": {z.domain: str(z.path) for z in self._zones},
            "max_energy_range_uj": {z.domain: z.max_range_uj for z in self._zones},
        }

    def metadata(self) -> dict[str, object]:
        return {"devices": {z.domain: str(z.path.parent) for z in self._zones}}

    def close(self) -> None:
        for zone in self._zones:
            os.close(zone.fd)
        self._zones = []


FACTORY = SensorFactory("rapl", frozenset(COMPONENTS), lambda options: RaplSensor())
