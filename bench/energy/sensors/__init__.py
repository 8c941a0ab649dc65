"""Power sources behind one interface, and the choice of sources for this machine.

``FACTORIES`` lists every source, best first: counters (NVML for GPUs, RAPL for CPU packages
and DRAM), then the models that cover what no counter does. Detection walks it once and
keeps, for each component (gpu, cpu, memory), the first source that measures it; a source
that cannot run here says why, and that reason is kept to explain the worse method chosen.
A new source is one file with its ``Sensor`` class and a ``SensorFactory``, and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carbonbench.energy.sensors import modelled, nvml, rapl
from carbonbench.energy.sensors.base import (
    COMPONENTS,
    METHODS,
    Component,
    Diagnostic,
    Method,
    Sensor,
    SensorFactory,
    SensorOptions,
    SensorUnavailable,
)
from carbonbench.energy.sensors.modelled import ModelledCpuSensor, ModelledRamSensor
from carbonbench.energy.sensors.nvml import NvmlSensor
from carbonbench.energy.sensors.rapl import RaplSensor

FACTORIES: list[SensorFactory] = [
    nvml.FACTORY,
    rapl.FACTORY,
    modelled.CPU_FACTORY,
    modelled.RAM_FACTORY,
]

__all__ = [
    "COMPONENTS",
    "FACTORIES",
    "METHODS",
    "Component",
    "Detection",
    "Diagnostic",
    "Method",
    "ModelledCpuSensor",
    "ModelledRamSensor",
    "NvmlSensor",
    "RaplSensor",
    "Sensor",
    "SensorFactory",
    "SensorOptions",
    "SensorUnavailable",
    "detect_sensors",
]


@dataclass
class Detection:
    sensors: list[Sensor]
    diagnostics: list[Diagnostic] = field(default_factory=list)  # why better methods are out

    @property
    def covered(self) -> frozenset[str]:
        return frozenset().union(*(s.covers for s in self.sensors))


def detect_sensors(
    options: SensorOptions | None = None,
    *,
    components: frozenset[str] | set[str] = frozenset(COMPONENTS),
    factories: list[SensorFactory] | None = None,
) -> Detection:
    """The best source for each of ``components`` on this machine, and why any better one is
    missing. A source is tried only while a component it measures is still uncovered."""
    options = options or SensorOptions()
    found = Detection([])
    for factory in FACTORIES if factories is None else factories:
        wanted = (factory.components & frozenset(components)) - found.covered
        if not wanted:
            continue
        try:
            sensor = factory.create(options)
        except SensorUnavailable as missing:
            found.diagnostics.append(missing.diagnostic)
            continue
        if not sensor.covers & wanted:  # nothing new from it
            sensor.close()
            continue
        found.sensors.append(sensor)
        found.diagnostics.extend(sensor.diagnostics)
        sensor.diagnostics.clear()
    return found
