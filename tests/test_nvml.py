"""The NVML sensor against patched pynvml functions (no GPU on the test machines)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml
import pytest

from carbonbench.energy.hardware import Hardware, gpu_names
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import NvmlSensor, SensorUnavailable, detect_sensors


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 1_000_000
    power_mw: int = 250_000
    max_power_mw: int = 700_000
    counter: bool = True
    instant: bool = True
    lost: bool = False


@dataclass
class FakeNvml:
    """The NVML calls the sensor makes, answering from FakeGpu records."""

    gpus: list[FakeGpu] = field(default_factory=list)
    power_trace: object = None  # callable(t) -> watts, evaluated at .t
    t: float = 0.0
    init_error: int | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in dir(self):
            if name.startswith("nvml"):
                monkeypatch.setattr(pynvml, name, getattr(self, name))

    def _check(self, gpu: FakeGpu) -> FakeGpu:
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _watts(self, gpu: FakeGpu) -> float:
        return self.power_trace(self.t) if self.power_trace else gpu.power_mw / 1e3

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return gpu.name

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        if not self._check(gpu).counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.energy_mj

    def nvmlDeviceGetFieldValues(self, gpu: FakeGpu, fields: list[int]) -> list:
        self._check(gpu)
        assert fields == [pynvml.NVML_FI_DEV_POWER_INSTANT]
        status = pynvml.NVML_SUCCESS if gpu.instant else pynvml.NVML_ERROR_NOT_SUPPORTED
        value = SimpleNamespace(uiVal=round(self._watts(gpu) * 1e3))
        return [SimpleNamespace(nvmlReturn=status, value=value)]

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return round(self._watts(self._check(gpu)) * 1e3)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, gpu: FakeGpu) -> list[int]:
        return [200_000, self._check(gpu).max_power_mw]


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml([FakeGpu(f"GPU-{c * 8}-0000") for c in "abcd"])
    fake.install(monkeypatch)
    return fake


def test_counter_path_differences_the_energy_counter(nvml: FakeNvml) -> None:
    sensor = NvmlSensor()
    assert sensor.domains == ("gpu:0", "gpu:1", "gpu:2", "gpu:3")
    assert sensor.methods == ("counter",) * 4
    with EnergyMeter([sensor], interval_s=0.01) as meter, meter.window("matmul") as m:
        nvml.gpus[0].energy_mj += 123_456
        nvml.gpus[2].energy_mj += 1_000
    assert m.energy_j["gpu:0"] == pytest.approx(123.456)
    assert m.energy_j["gpu:2"] == pytest.approx(1.0)
    assert m.energy_j["gpu:1"] == 0.0
    assert m.method["gpu:0"] == "counter"
    assert m.constants["nvml"]["gpus"]["gpu:0"]["power"] == "NVML_FI_DEV_POWER_INSTANT"


def test_power_only_path_integrates_a_known_trace_within_1_percent(nvml: FakeNvml) -> None:
    """No energy counter: power sampled at 10 Hz over a varying trace is integrated."""

    def trace(t: float) -> float:
        return 200.0 + 100.0 * math.sin(2 * math.pi * t / 3.0) + 40.0 * math.sin(7.0 * t)

    def integral(t: float) -> float:
        return (
            200.0 * t
            - 300.0 / (2 * math.pi) * math.cos(2 * math.pi * t / 3.0)
            - (40.0 / 7.0) * math.cos(7.0 * t)
        )

    nvml.gpus = [FakeGpu("GPU-x", counter=False)]
    nvml.power_trace = trace
    sensor = NvmlSensor()
    assert sensor.methods == ("power-sampled",)
    assert "no energy counter" in str(sensor.diagnostics[0])
    start, _ = sensor.read(0.0)
    for step in range(1, 101):  # 10 s at 10 Hz
        nvml.t = step * 0.1
        energy, power = sensor.read(nvml.t)
    expected = integral(10.0) - integral(0.0)
    assert energy[0] - start[0] == pytest.approx(expected, rel=0.01)
    assert power[0] == pytest.approx(trace(10.0), abs=1e-3)


def test_power_usage_fallback_when_instant_field_is_unsupported(nvml: FakeNvml) -> None:
    nvml.gpus = [FakeGpu("GPU-y", instant=False, power_mw=312_000)]
    sensor = NvmlSensor()
    _, power = sensor.read(1.0)
    assert power == [312.0]
    assert "nvmlDeviceGetPowerUsage" in sensor.constants()["gpus"]["gpu:0"]["power"]


def test_an_old_binding_without_the_instant_field_falls_back(nvml, monkeypatch) -> None:
    """nvidia-ml-py before 12.535 has no NVML_FI_DEV_POWER_INSTANT: averaged power, no crash."""
    monkeypatch.delattr(pynvml, "NVML_FI_DEV_POWER_INSTANT")
    nvml.gpus = [FakeGpu("GPU-y", power_mw=275_000)]
    sensor = NvmlSensor()
    assert sensor.read(1.0)[1] == [275.0]
    assert "nvmlDeviceGetPowerUsage" in sensor.constants()["gpus"]["gpu:0"]["power"]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("2,0", [2, 0]),
        ("GPU-cccc,GPU-aaaa", [2, 0]),  # UUID prefixes, as CUDA accepts
        ("1,7,2", [1]),  # CUDA stops at the first entry that names no GPU
        ("3, 1", [3, 1]),
    ],
)
def test_cuda_visible_devices_maps_torch_indices_to_nvml(nvml, monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    sensor = NvmlSensor()
    indices = [g["nvml_index"] for g in sensor.constants()["gpus"].values()]
    assert indices == expected
    assert sensor.domains == tuple(f"gpu:{i}" for i in range(len(expected)))


def test_no_visible_gpu_is_a_diagnostic(nvml, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SensorUnavailable, match="no GPU is visible"):
        NvmlSensor()


def test_driver_missing_is_a_diagnostic_not_a_crash(nvml: FakeNvml) -> None:
    nvml.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    with pytest.raises(SensorUnavailable, match="no NVIDIA driver"):
        NvmlSensor()
    detection = detect_sensors()
    assert "nvml" not in [s.source for s in detection.sensors]
    assert any("NVML could not start" in str(d) for d in detection.diagnostics)


def test_binding_not_installed(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(SensorUnavailable, match="pip install nvidia-ml-py"):
        NvmlSensor()


def test_gpu_lost_mid_run_keeps_energy_and_reports(nvml: FakeNvml) -> None:
    with EnergyMeter([NvmlSensor()], interval_s=0.01) as meter, meter.window("run") as m:
        nvml.gpus[1].energy_mj += 50_000
        with meter.window("probe"):  # its edges are the last good readings
            pass
        nvml.gpus[1].lost = True
        nvml.gpus[0].energy_mj += 2_000
    assert m.energy_j["gpu:1"] == pytest.approx(50.0)
    assert m.energy_j["gpu:0"] == pytest.approx(2.0)
    assert any("gpu:1" in d and "stopped answering" in d for d in m.diagnostics)


def test_hardware_names_the_gpus_cuda_shows_from_nvml(nvml: FakeNvml, monkeypatch) -> None:
    """Without torch: the supervisor compares this machine with a run's before resuming it."""
    h100, a100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
    nvml.gpus[1].name = a100
    assert gpu_names() == [h100, a100, h100, h100]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbbbbbb,0")
    assert Hardware.here().gpus == [a100, h100]
    nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    assert gpu_names() == []
