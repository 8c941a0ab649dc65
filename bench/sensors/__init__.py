"""Power sources behind one interface, and the choice of sources for this machine.

Counters first: NVML for GPUs, RAPL for CPU packages and DRAM. The modelled CPU covers the CPU
only where RAPL cannot; the modelled RAM covers memory only where no RAPL dram zone does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.sensors.base import METHODS, Diagnostic, Method, Sensor, SensorUnavailable
from bench.sensors.modelled import ModelledCpuSensor, ModelledRamSensor
from bench.sensors.nvml import NvmlSensor
from bench.sensors.rapl import RaplSensor

__all__ = [
    "METHODS",
    "Detection",
    "Diagnostic",
    "Method",
    "ModelledCpuSensor",
    "ModelledRamSensor",
    "NvmlSensor",
    "RaplSensor",
    "Sensor",
    "SensorUnavailable",
    "detect_sensors",
]


@dataclass
class Detection:
    sensors: list[Sensor]
    diagnostics: list[Diagnostic] = field(default_factory=list)  # why better methods are out


def detect_sensors(
    *,
    gpu: bool = True,
    cpu_tdp_w: float | None = None,
    ram_w_per_gb: float | None = None,
) -> Detection:
    """The best source for every domain of this machine, and why any better one is missing."""
    found = Detection([])
    if gpu:
        try:
            nvml = NvmlSensor()
            found.sensors.append(nvml)
            found.diagnostics.extend(nvml.diagnostics)
            nvml.diagnostics.clear()
        except SensorUnavailable as missing:
            found.diagnostics.append(missing.diagnostic)
    rapl = None
    try:
        rapl = RaplSensor()
        found.sensors.append(rapl)
    except SensorUnavailable as missing:
        found.diagnostics.append(missing.diagnostic)
    if rapl is None:
        found.sensors.append(ModelledCpuSensor(cpu_tdp_w))
    if rapl is None or not any(d.startswith("cpu:dram-") for d in rapl.domains):
        if rapl is not None:
            found.diagnostics.append(
                Diagnostic("rapl", "no RAPL dram zone (common on AMD): memory is modelled.")
            )
        found.sensors.append(ModelledRamSensor(*(() if ram_w_per_gb is None else (ram_w_per_gb,))))
    return found
