"""NVIDIA GPU energy and power through NVML (the ``pynvml`` module of nvidia-ml-py).

Energy: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and newer),
differenced between reads: method ``counter``. Where the GPU lacks it, power is integrated
between reads (trapezoids): method ``power-sampled``. Power: the instant field
``NVML_FI_DEV_POWER_INSTANT`` where supported, else ``nvmlDeviceGetPowerUsage`` (a 1 s average
on Ampere and newer). Domains are ``gpu:<i>`` with i the index torch gives the GPU: the
position in ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-<uuid>`` prefixes) when that is set.
A GPU lost mid-run keeps its energy so far and is reported, never raised.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from carbonbench.energy.sensors.base import (
    Component,
    Diagnostic,
    Method,
    Sensor,
    SensorFactory,
    SensorUnavailable,
)


def _load_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise SensorUnavailable(
            Diagnostic(
                "nvml",
                "the NVML binding is not installed.",
                "pip install nvidia-ml-py",
                components=("gpu",),
            )
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise SensorUnavailable(
            Diagnostic(
                "nvml",
                f"NVML could not start ({error}): no NVIDIA driver or GPU on this machine.",
                "Install the NVIDIA driver (nvidia-smi should list the GPUs); in a container, "
                "run with the NVIDIA container toolkit (--gpus all).",
                components=("gpu",),
            )
        ) from None
    return pynvml


def visible_handles(nvml: Any, visible: str | None) -> list[tuple[int, Any]]:
    """(NVML index, handle) of each GPU CUDA shows, in CUDA's order.

    Like CUDA, stops at the first entry that names no GPU; MIG entries are not supported.
    """
    count = nvml.nvmlDeviceGetCount()
    if visible is None:
        return [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    uuids = {}
    if "GPU-" in visible:
        for i in range(count):
            uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))
            uuids[i] = uuid.decode() if isinstance(uuid, bytes) else uuid
    chosen: list[int] = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit() and int(entry) < count:
            index = int(entry)
        elif entry.startswith("GPU-"):
            matches = [i for i, u in uuids.items() if u.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        else:
            break
        if index in chosen:
            break
        chosen.append(index)
    return [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in chosen]


@dataclass
class _Gpu:
    domain: str
    nvml_index: int
    handle: Any
    name: str
    has_counter: bool
    instant_power: bool
    max_power_w: float | None = None  # the highest power limit the board takes
    first_mj: int = 0
    energy_j: float = 0.0
    power_w: float = 0.0
    lost: bool = False


class NvmlSensor(Sensor):
    source = "nvml"

    def __init__(self, visible: str | None = None, first_index: int = 0) -> None:
        """``visible``: as CUDA_VISIBLE_DEVICES (default: that variable). ``first_index``: the
        torch index of the first GPU listed (a distributed rank measuring only its own GPU)."""
        super().__init__()
        self._nvml = nvml = _load_nvml()
        if visible is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._gpus: list[_Gpu] = []
        for position, (index, handle) in enumerate(visible_handles(nvml, visible)):
            self._gpus.append(self._probe(f"gpu:{first_index + position}", index, handle))
        if not self._gpus:
            nvml.nvmlShutdown()
            raise SensorUnavailable(
                Diagnostic(
                    "nvml",
                    f"no GPU is visible (CUDA_VISIBLE_DEVICES={visible!r}).",
                    "Unset CUDA_VISIBLE_DEVICES or name GPUs by index or GPU-<uuid>.",
                    components=("gpu",),
                )
            )
        self.domains = tuple(g.domain for g in self._gpus)
        self.methods: tuple[Method, ...] = tuple(
            "counter" if g.has_counter else "power-sampled" for g in self._gpus
        )
        self.components: tuple[Component, ...] = ("gpu",) * len(self._gpus)
        self.additive = (True,) * len(self._gpus)
        self._last_now: float | None = None

    def _probe(self, domain: str, index: int, handle: Any) -> _Gpu:
        nvml = self._nvml
        name = nvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        gpu = _Gpu(domain, index, handle, name, has_counter=True, instant_power=True)
        try:
            gpu.first_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except nvml.NVMLError as error:
            gpu.has_counter = False
            self.diagnostics.append(
                Diagnostic(
                    "nvml",
                    f"{domain} ({name}) has no energy counter ({error}); integrating power "
                    "samples instead (less exact for short kernels).",
                    "Use a Volta or newer GPU for counter-based energy.",
                    domains=(domain,),
                )
            )
        gpu.instant_power = self._instant_power(handle) is not None
        gpu.power_w = self._power(gpu)
        with contextlib.suppress(nvml.NVMLError):
            gpu.max_power_w = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[1] / 1e3
        return gpu

    def _instant_power(self, handle: Any) -> float | None:
        nvml = self._nvml
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)  # nvidia-ml-py >= 12.535
        if field_id is None:
            return None
        try:
            (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
        except nvml.NVMLError:
            return None
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            return None
        return value.value.uiVal / 1e3

    def _power(self, gpu: _Gpu) -> float:
        if gpu.instant_power:
            watts = self._instant_power(gpu.handle)
            if watts is not None:
                return watts
        return self._nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1e3

    def read(self, now: float) -> tuple[list[float], list[float]]:
        nvml = self._nvml
        dt = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        self._last_now = now
        for gpu in self._gpus:
            if gpu.lost:
                continue
            try:
                power = self._power(gpu)
                if gpu.has_counter:
                    mj = nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)
                    gpu.energy_j = (mj - gpu.first_mj) / 1e3
                else:
                    gpu.energy_j += 0.5 * (power + gpu.power_w) * dt
                gpu.power_w = power
            except nvml.NVMLError as error:
                gpu.lost, gpu.power_w = True, 0.0
                self.diagnostics.append(
                    Diagnostic(
                        "nvml",
                        f"{gpu.domain} ({gpu.name}) stopped answering ({error}); its energy "
                        "stops at the last good reading.",
                        "Check the GPU with nvidia-smi; a lost GPU needs a reset or reboot.",
                        domains=(gpu.domain,),
                    )
                )
        return [g.energy_j for g in self._gpus], [g.power_w for g in self._gpus]

    def driver_version(self) -> str | None:
        try:
            version = self._nvml.nvmlSystemGetDriverVersion()
        except self._nvml.NVMLError:
            return None
        return version.decode() if isinstance(version, bytes) else version

    def metadata(self) -> dict[str, object]:
        return {
            "driver": self.driver_version(),
            "devices": {g.domain: g.name for g in self._gpus},
            # the board's highest power limit, W (None: not readable): a cost's MaxPower
            "max_power_w": {g.domain: g.max_power_w for g in self._gpus},
        }

    def constants(self) -> dict[str, object]:
        return {
            "gpus": {
                g.domain: {
                    "name": g.name,
                    "nvml_index": g.nvml_index,
                    "energy": "nvmlDeviceGetTotalEnergyConsumption"
                    if g.has_counter
                    else "integrated power",
                    "power": "NVML_FI_DEV_POWER_INSTANT"
                    if g.instant_power
                    else "nvmlDeviceGetPowerUsage (1 s average on recent GPUs)",
                }
                for g in self._gpus
            },
            "index_order": "CUDA_VISIBLE_DEVICES over NVML (PCI bus) order; set "
            "CUDA_DEVICE_ORDER=PCI_BUS_ID so torch uses the same",
        }

    def close(self) -> None:
        if self._gpus:
            self._gpus = []
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()


FACTORY = SensorFactory(
    "nvml",
    frozenset({"gpu"}),
    lambda options: NvmlSensor(visible=options.gpus, first_index=options.first_gpu_index),
)
