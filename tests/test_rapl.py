"""RAPL through a fake powercap tree laid out like the kernel's, advanced by a thread."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import RaplSensor, SensorUnavailable, detect_sensors
from tests.helpers import MAX_RANGE_UJ, make_powercap, make_zone


class Advancer:
    """Advances every zone's energy_uj at a known power, wrapping at max_energy_range_uj."""

    def __init__(self, zones: dict[str, Path], watts: dict[str, float]) -> None:
        self.zones, self.watts = zones, watts
        self.injected = dict.fromkeys(zones, 0.0)  # joules added while running
        self.lock = threading.Lock()  # held while writing: hold it to read a consistent state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _write(self, dt: float) -> None:
        for domain, path in self.zones.items():
            joules = self.watts.get(domain, 1.0) * dt
            self.injected[domain] += joules
            counter = path / "energy_uj"
            value = (int(counter.read_text()) + round(joules * 1e6)) % MAX_RANGE_UJ
            # in place and fixed-width, as atomic for a reader as the kernel's sysfs file
            fd = os.open(counter, os.O_WRONLY)
            os.pwrite(fd, f"{value:020d}\n".encode(), 0)
            os.close(fd)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            with self.lock:
                self._write(0.005)

    def __enter__(self) -> Advancer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = tmp_path / "powercap"
    root.mkdir()
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(root))
    return make_powercap(root)


def test_discovers_packages_and_dram_never_core_or_links(powercap) -> None:
    sensor = RaplSensor()
    assert sensor.domains == (
        "cpu:package-0",
        "cpu:dram-0",
        "cpu:package-1",
        "cpu:dram-1",
        "cpu:psys",
    )
    assert sensor.methods == ("counter",) * 5
    assert sensor.additive == (True, True, True, True, False)
    sensor.close()


def test_measured_energy_equals_injected_energy_through_wraps(powercap) -> None:
    """A thread advances the counters while the meter's sampler runs; the window's edges are
    read while the advancer is paused, so injected energy is known exactly at both edges."""
    watts = {"cpu:package-0": 30.0, "cpu:package-1": 25.0, "cpu:dram-0": 4.0, "cpu:dram-1": 3.5}
    watts["cpu:psys"] = 20.0
    with EnergyMeter([RaplSensor()], interval_s=0.01) as meter, Advancer(powercap, watts) as adv:
        time.sleep(0.05)
        with adv.lock:
            m = meter.begin_window("load")
            before = dict(adv.injected)
        time.sleep(1.5)
        with adv.lock:
            meter.end_window("load")
            after = dict(adv.injected)
    assert m.samples > 50
    for domain in ("cpu:package-0", "cpu:package-1"):
        assert (after[domain] - before[domain]) / (MAX_RANGE_UJ / 1e6) > 3, "several wraps"
    for domain in watts:
        assert m.energy_j[domain] == pytest.approx(after[domain] - before[domain], rel=1e-4)
    assert m.method == dict.fromkeys(watts, "counter")
    assert m.total_energy_j == pytest.approx(
        sum(e for d, e in m.energy_j.items() if d != "cpu:psys")
    )


def test_energy_is_exact_to_0_01_percent_when_edges_are_known(powercap) -> None:
    """Deterministic: counters advanced by hand between the reads, wrapping several times."""
    sensor = RaplSensor()
    adv = Advancer(powercap, {"cpu:package-0": 30.0})
    start, _ = sensor.read(0.0)
    for step in range(200):  # 10 s of simulated time at 30 W: 300 J, 60 wraps of 5 J
        adv._write(0.05)
        sensor.read(0.05 * (step + 1))
    end, _ = sensor.read(10.0)
    index = sensor.domains.index("cpu:package-0")
    assert end[index] - start[index] == pytest.approx(adv.injected["cpu:package-0"], rel=1e-4)
    assert adv.injected["cpu:package-0"] == pytest.approx(300.0)
    sensor.close()


def test_permission_denied_is_reported_with_the_fix(powercap, monkeypatch) -> None:
    real_open = os.open

    def deny(path, flags, *args):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(SensorUnavailable) as error:
        RaplSensor()
    message = str(error.value)
    assert "permission denied reading" in message and "intel-rapl:0/energy_uj" in message
    assert "root only since the 2020" in message and "udev rule" in message
    detection = detect_sensors(components={"cpu", "memory"})
    assert [s.source for s in detection.sensors] == ["modelled-cpu", "modelled-ram"]
    assert any("permission denied" in str(d) for d in detection.diagnostics)


def test_missing_tree_is_a_clear_diagnostic(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(tmp_path / "absent"))
    with pytest.raises(SensorUnavailable, match="does not exist: no RAPL counters"):
        RaplSensor()


def test_dram_zone_replaces_modelled_ram(powercap) -> None:
    detection = detect_sensors(components={"cpu", "memory"})
    assert [s.source for s in detection.sensors] == ["rapl"]


def test_package_without_dram_gets_modelled_ram(tmp_path, monkeypatch) -> None:
    root = tmp_path / "amd"
    root.mkdir()
    make_zone(root / "intel-rapl:0", "package-0")
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(root))
    detection = detect_sensors(components={"cpu", "memory"})
    assert [s.source for s in detection.sensors] == ["rapl", "modelled-ram"]
    assert any("no RAPL dram zone" in str(d) for d in detection.diagnostics)
