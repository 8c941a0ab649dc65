"""The EnergyMeter sampler's own CPU cost, per sample and as a share of one core.

For each sensor set (none, to show the meter's own floor; the modelled CPU and RAM of this
machine; a fake powercap tree of two packages with dram and psys zones; the machine's GPUs
through NVML, where there are any) and each rate (10 Hz, 100 Hz), runs the sampler alone for a
few seconds and prints:
  read ms/sample    CPU time of the reads and the buffer append, measured in the thread
  total ms/sample   all the sampler thread's CPU time (timed waits and wake-ups included)
  wake ms           what a thread that only sleeps at the same rate costs per wake-up: the
                    machine's share of the total, paid by any sampler (large on virtual machines)
  own ms/sample     total - wake: the sampler's own cost, compared with the target
  % of one core     total CPU seconds / wall seconds
  warm ms/read      the same reads back to back (caches warm)
Target: <= 0.05 ms per sample.

    python benchmarks/sampler_overhead.py [--seconds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import (
    ModelledCpuSensor,
    ModelledRamSensor,
    NvmlSensor,
    RaplSensor,
    Sensor,
    SensorUnavailable,
)


def fake_powercap(root: Path) -> None:
    """Two packages with core/uncore/dram subzones and a psys zone, as the kernel lays them out."""

    def zone(path: Path, name: str) -> Path:
        path.mkdir(parents=True)
        (path / "name").write_text(f"{name}\n")
        (path / "energy_uj").write_text("123456789\n")
        (path / "max_energy_range_uj").write_text("262143328850\n")
        return path

    for n in range(2):
        top = zone(root / f"intel-rapl:{n}", f"package-{n}")
        for m, sub in enumerate(("core", "uncore", "dram")):
            (root / f"intel-rapl:{n}:{m}").symlink_to(zone(top / f"intel-rapl:{n}:{m}", sub))
    zone(root / "intel-rapl:2", "psys")


def warm_read_ms(sensors: list[Sensor], reads: int = 2000) -> float:
    start = time.thread_time()
    for _ in range(reads):
        now = time.perf_counter()
        for sensor in sensors:
            sensor.read(now)
    elapsed = time.thread_time() - start
    for sensor in sensors:
        sensor.close()
    return elapsed / reads * 1e3


def wake_ms(interval_s: float, seconds: float) -> float:
    """CPU ms per wake-up of a thread that sleeps on the sampler's schedule and does nothing."""
    result: list[float] = []

    def sleeper() -> None:
        wakes, deadline, start = 0, time.perf_counter(), time.thread_time()
        end = deadline + seconds
        while deadline < end:
            deadline += interval_s
            time.sleep(max(0.0, deadline - time.perf_counter()))
            wakes += 1
        result.append((time.thread_time() - start) / wakes * 1e3)

    thread = threading.Thread(target=sleeper)
    thread.start()
    thread.join()
    return result[0]


def measure(sensors: list[Sensor], interval_s: float, seconds: float) -> tuple[float, float, float]:
    with EnergyMeter(sensors, interval_s=interval_s) as meter:
        time.sleep(0.5)  # past the thread's start-up
        cpu0, read0, n0, t0 = (
            meter.sampler_cpu_s,
            meter.read_cpu_s,
            meter.sampler_reads,
            time.perf_counter(),
        )
        time.sleep(seconds)
        cpu1, read1, n1, t1 = (
            meter.sampler_cpu_s,
            meter.read_cpu_s,
            meter.sampler_reads,
            time.perf_counter(),
        )
    samples = n1 - n0
    return (
        (read1 - read0) / samples * 1e3,
        (cpu1 - cpu0) / samples * 1e3,
        (cpu1 - cpu0) / (t1 - t0) * 100,
    )


def sensor_sets(powercap: str) -> dict[str, Callable[[], list[Sensor]]]:
    sets: dict[str, Callable[[], list[Sensor]]] = {
        "none (the meter's floor)": lambda: [],
        "modelled cpu + ram": lambda: [ModelledCpuSensor(), ModelledRamSensor()],
        "fake powercap (5 zones)": lambda: [RaplSensor(powercap)],
    }
    try:
        NvmlSensor().close()
    except SensorUnavailable:
        pass
    else:
        sets["nvml (this machine's GPUs)"] = lambda: [NvmlSensor()]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    table = Table(title="EnergyMeter sampler cost (target <= 0.05 ms per sample)")
    columns = ("sensors", "rate", "read ms/sample", "total ms/sample", "wake ms", "own ms/sample")
    for column in (*columns, "% of one core", "warm ms/read"):
        table.add_column(column, justify="left" if column == "sensors" else "right")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fake_powercap(Path(tmp))
        for name, make in sensor_sets(tmp).items():
            for hz in (10, 100):
                read, total, share = measure(make(), 1 / hz, args.seconds)
                wake = wake_ms(1 / hz, args.seconds)
                warm = warm_read_ms(make())
                row = {
                    "sensors": name,
                    "hz": hz,
                    "read_ms": read,
                    "total_ms": total,
                    "wake_ms": wake,
                    "own_ms": total - wake,
                    "core_percent": share,
                    "warm_read_ms": warm,
                }
                rows.append(row)
                figures = (read, total, wake, total - wake)
                table.add_row(
                    name,
                    f"{hz} Hz",
                    *(f"{x:.4f}" for x in figures),
                    f"{share:.3f}",
                    f"{warm:.4f}",
                )
    Console(width=160).print(table)
    if args.json:
        machine = {"platform": platform.platform(), "cpu": platform.processor() or None}
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
