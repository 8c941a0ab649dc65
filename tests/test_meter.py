"""EnergyMeter windows, idle baseline and synchronisation; modelled sensors for real."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import torch

from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import ModelledCpuSensor, ModelledRamSensor, Sensor
from carbonbench.energy.sensors.modelled import DEFAULT_W_PER_CPU, lookup_tdp


class ConstantPower(Sensor):
    """A source of known constant power per domain (the meter's own logic under test)."""

    source = "constant"
    methods = ("counter", "counter")

    def __init__(self, watts: dict[str, float], additive: tuple[bool, ...] = (True, True)):
        super().__init__()
        self.watts = watts
        self.domains = tuple(watts)
        self.additive = additive
        self.start: float | None = None

    def read(self, now: float) -> tuple[list[float], list[float]]:
        if self.start is None:
            self.start = now
        return [w * (now - self.start) for w in self.watts.values()], list(self.watts.values())


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_window_energy_duration_method_and_timeline() -> None:
    sensor = ConstantPower({"gpu:0": 300.0, "cpu:package-0": 50.0})
    with EnergyMeter([sensor], 0.01) as meter, meter.window("step") as m:
        assert not m.complete
        time.sleep(0.3)
    assert m.complete and m.name == "step"
    assert m.energy_j["gpu:0"] == pytest.approx(300.0 * m.duration_s, rel=1e-9)
    assert m.total_energy_j == pytest.approx(350.0 * m.duration_s, rel=1e-9)
    assert m.method == {"gpu:0": "counter", "cpu:package-0": "counter"}
    assert 15 <= m.samples == len(m.timeline.t)
    assert all(0 <= t <= m.duration_s for t in m.timeline.t)
    assert set(m.timeline.watts["gpu:0"]) == {300.0}
    assert m.power_w["cpu:package-0"] == pytest.approx(50.0)


def test_overlapping_domains_are_reported_but_not_added() -> None:
    sensor = ConstantPower({"cpu:package-0": 40.0, "cpu:psys": 90.0}, additive=(True, False))
    with EnergyMeter([sensor], 0.05) as meter, meter.window("w") as m:
        time.sleep(0.05)
    assert m.energy_j["cpu:psys"] > m.energy_j["cpu:package-0"] > 0
    assert m.total_energy_j == m.energy_j["cpu:package-0"]


def test_windows_nest_and_overlap() -> None:
    with EnergyMeter([ConstantPower({"a": 10.0, "b": 1.0})], 0.01) as meter:
        outer = meter.begin_window("outer")
        time.sleep(0.05)
        inner = meter.begin_window("inner")
        time.sleep(0.05)
        meter.end_window("outer")
        time.sleep(0.05)
        meter.end_window("inner")
    assert outer.duration_s == pytest.approx(0.1, abs=0.03)
    assert inner.duration_s == pytest.approx(0.1, abs=0.03)
    assert outer.energy_j["a"] == pytest.approx(10 * outer.duration_s)
    assert inner.samples > 0 and outer.samples > 0


def test_peek_reads_a_window_so_far_and_leaves_it_open() -> None:
    with EnergyMeter([ConstantPower({"a": 10.0, "b": 1.0})], 0.01) as meter:
        m = meter.begin_window("run")
        time.sleep(0.05)
        first = meter.peek("run")
        time.sleep(0.05)
        second = meter.peek("run")
        meter.end_window("run")
        with pytest.raises(ValueError, match="no open window named 'run'"):
            meter.peek("run")
    assert not first.complete and first.started_at == m.started_at
    assert first.energy_j["a"] == pytest.approx(10 * first.duration_s)
    assert 0 < first.total_energy_j < second.total_energy_j < m.total_energy_j
    assert first.method == {"a": "counter", "b": "counter"}
    assert m.complete and m.samples > 0  # peeking left the window's own figures alone


def test_window_misuse_is_a_clear_error() -> None:
    with EnergyMeter([ConstantPower({"a": 1.0, "b": 1.0})], 0.1) as meter:
        meter.begin_window("x")
        with pytest.raises(ValueError, match="window 'x' is already open"):
            meter.begin_window("x")
        with pytest.raises(ValueError, match="no open window named 'y'"):
            meter.end_window("y")
    with pytest.raises(ValueError, match=r"interval_s must be between 0\.01 and 10"):
        EnergyMeter([ConstantPower({"a": 1.0, "b": 1.0})], interval_s=0.001)
    with pytest.raises(ValueError, match="same domain"):
        EnergyMeter([ConstantPower({"a": 1.0, "b": 1.0}), ConstantPower({"a": 1.0, "c": 1.0})])


def test_idle_baseline_gives_dynamic_energy() -> None:
    sensor = ConstantPower({"gpu:0": 60.0, "cpu:package-0": 20.0})
    with EnergyMeter([sensor], 0.05) as meter:
        idle = meter.idle_baseline(0.2)
        assert idle == pytest.approx({"gpu:0": 60.0, "cpu:package-0": 20.0})
        sensor.watts = {"gpu:0": 260.0, "cpu:package-0": 20.0}
        sensor.start = None  # the new rate applies from the next read on
        with meter.window("load") as m:
            time.sleep(0.1)
    assert m.idle_w == idle
    dynamic = m.dynamic_energy_j
    assert dynamic is not None
    assert dynamic["cpu:package-0"] == pytest.approx(0.0, abs=1e-9)
    assert m.total_dynamic_energy_j == pytest.approx(m.total_energy_j - 80.0 * m.duration_s)
    with pytest.raises(ValueError, match="positive duration"):
        meter.idle_baseline(0)


def test_edges_synchronise_cuda_when_torch_uses_it(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "synchronize", calls.append)
    with EnergyMeter([ConstantPower({"a": 1.0, "b": 1.0})], 0.1) as meter, meter.window("w"):
        assert calls == [0, 1]
    assert calls == [0, 1, 0, 1]


def test_sampler_reports_its_own_cost() -> None:
    with EnergyMeter([ModelledCpuSensor(), ModelledRamSensor()], 0.01) as meter:
        time.sleep(0.3)
        assert meter.sampler_reads >= 10
        assert 0 < meter.read_cpu_s <= meter.sampler_cpu_s < 0.3
    assert not meter._thread.is_alive()  # close() waited for it


def test_close_does_not_wait_out_a_long_interval() -> None:
    meter = EnergyMeter([ConstantPower({"a": 1.0, "b": 2.0})], 10.0)
    time.sleep(0.05)
    started = time.perf_counter()
    meter.close()
    assert time.perf_counter() - started < 5.0  # a slice of the sleep, not the 10 s tick
    assert not meter._thread.is_alive() and meter.sampler_reads == 0


def test_modelled_cpu_follows_utilisation_for_real() -> None:
    """P = P_idle + (P_max - P_idle) x utilisation, with utilisation read from the machine."""
    sensor = ModelledCpuSensor(cpu_tdp_w=100.0)
    assert sensor.constants()["p_max_source"] == "given by the user (--cpu-tdp)"
    assert (sensor.p_max, sensor.p_idle) == (100.0, 10.0)
    with EnergyMeter([sensor], 0.05) as meter:
        before = psutil.cpu_times()
        with meter.window("busy") as m:
            worker = threading.Thread(target=busy, args=(0.6,))
            worker.start()
            worker.join()
        after = psutil.cpu_times()
    spent = {f: getattr(after, f) - getattr(before, f) for f in after._fields}
    total = sum(spent.values())
    utilisation = (total - spent["idle"] - spent.get("iowait", 0.0)) / total
    expected = (10.0 + 90.0 * utilisation) * m.duration_s
    assert m.method == {"cpu:modelled": "modelled"}
    assert m.energy_j["cpu:modelled"] == pytest.approx(expected, rel=0.15)
    # the model's bounds, P_idle and P_max, both reachable (a machine busy elsewhere hits P_max)
    assert 10.0 * m.duration_s <= m.energy_j["cpu:modelled"] <= 100.0 * m.duration_s * (1 + 1e-9)
    assert max(m.timeline.watts["cpu:modelled"]) > 30.0  # one busy core of two or more


def test_modelled_cpu_constants_and_tdp_table() -> None:
    assert lookup_tdp("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz") == (
        "intel xeon platinum 8380",
        270.0,
    )
    assert lookup_tdp("AMD EPYC 7763 64-Core Processor") == ("amd epyc 7763", 280.0)
    assert lookup_tdp("Imaginary CPU 9000") is None
    sensor = ModelledCpuSensor()
    constants = sensor.constants()
    for key in ("cpu", "p_max_w", "p_max_source", "p_idle_w", "idle_fraction", "model"):
        assert key in constants
    if constants["virtual_machine"] or lookup_tdp(str(constants["cpu"])) is None:
        assert sensor.p_max == DEFAULT_W_PER_CPU * psutil.cpu_count()
        assert "default" in str(constants["p_max_source"])
    with pytest.raises(ValueError, match="positive"):
        ModelledCpuSensor(cpu_tdp_w=0)


def test_modelled_ram_is_watts_per_gb_in_use() -> None:
    sensor = ModelledRamSensor(w_per_gb=0.5)
    memory = psutil.virtual_memory()
    _, (power,) = sensor.read(0.0)
    assert power == pytest.approx(0.5 * (memory.total - memory.available) / 1e9, rel=0.05)
    (energy,), _ = sensor.read(2.0)
    assert energy == pytest.approx(2.0 * power, rel=0.05)


def test_default_meter_detects_this_machine() -> None:
    with EnergyMeter(interval_s=0.05) as meter:
        assert meter.domains
        with meter.window("w") as m:
            busy(0.1)
    assert m.total_energy_j > 0
    assert set(m.method.values()) <= {"counter", "power-sampled", "modelled"}


def test_a_closed_meter_refuses_windows() -> None:
    meter = EnergyMeter([ConstantPower({"a": 1.0, "b": 2.0})], 0.1)
    meter.begin_window("open-at-close")
    meter.close()
    meter.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="meter is closed"):
        meter.begin_window("late")
    with pytest.raises(RuntimeError, match="meter is closed"):
        meter.end_window("open-at-close")
