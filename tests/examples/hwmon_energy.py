"""A power source added from outside the package: one file and one line in the detection list.

CPU socket energy from the Linux ``amd_energy`` hwmon driver: ``energyN_input`` counters in
microjoules, labelled ``EsocketN`` (and ``EcoreNNN`` for cores, inside the sockets, so left
out). It measures the component ``cpu``, so detection puts it ahead of the modelled CPU::

    FACTORIES.insert(FACTORIES.index(modelled.CPU_FACTORY), FACTORY)  # the one line
"""

from __future__ import annotations

import os
from pathlib import Path

from carbonbench.energy.sensors import Diagnostic, Method, Sensor, SensorFactory, SensorUnavailable


def hwmon_root() -> Path:
    return Path(os.environ.get("CARBONBENCH_HWMON_ROOT", "/sys/class/hwmon"))


class HwmonEnergySensor(Sensor):
    source = "hwmon"

    def __init__(self, root: Path | None = None) -> None:
        super().__init__()
        root = root or hwmon_root()
        self._files: list[Path] = []
        domains = []
        for device in sorted(root.glob("hwmon*")):
            if not (device / "name").is_file() or (device / "name").read_text().strip() != (
                "amd_energy"
            ):
                continue
            for label in sorted(device.glob("energy*_label")):
                name = label.read_text().strip()
                if name.startswith("Esocket"):
                    self._files.append(label.with_name(label.name.replace("_label", "_input")))
                    domains.append(f"cpu:socket-{name.removeprefix('Esocket')}")
        if not self._files:
            raise SensorUnavailable(
                Diagnostic(
                    "hwmon",
                    f"no amd_energy socket counters under {root}.",
                    "Load the amd_energy module (AMD Zen CPUs).",
                    components=("cpu",),
                )
            )
        self.domains = tuple(domains)
        self.methods: tuple[Method, ...] = ("counter",) * len(domains)
        self.components = ("cpu",) * len(domains)
        self.additive = (True,) * len(domains)
        self._first = [int(f.read_text()) for f in self._files]
        self._last: tuple[float, list[float]] | None = None

    def read(self, now: float) -> tuple[list[float], list[float]]:
        energy = [
            (int(f.read_text()) - first) / 1e6
            for f, first in zip(self._files, self._first, strict=True)
        ]
        power = [0.0] * len(energy)
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            power = [(e - before) / dt for e, before in zip(energy, self._last[1], strict=True)]
        self._last = (now, energy)
        return energy, power

    def metadata(self) -> dict[str, object]:
        return {"devices": {d: str(f) for d, f in zip(self.domains, self._files, strict=True)}}


FACTORY = SensorFactory("hwmon", frozenset({"cpu"}), lambda options: HwmonEnergySensor())
