"""The EnergyMeter sampler's own CPU cost, per sample and as a share of one core.

For each sensor set (none, to show the meter's own floor; the modelled CPU and RAM of this
machine; a fake powercap tree of two packages with dram and psys zones) and each rate
(10 Hz, 100 Hz), runs the sampler alone for a few seconds and prints:
  read ms/sample    CPU time of the reads and the buffer append, measured in the thread
  total ms/sample   all the sampler thread's CPU time (timed waits and wake-ups included)
  % of one core     total CPU seconds / wall seconds
  warm ms/read      the same reads back to back (caches warm): the code's own cost, without
                    what waking a thread costs the machine (large on virtual machines)
Target: <= 0.05 ms per sample.

    python benchmarks/sampler_overhead.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.meter import EnergyMeter
from bench.sensors import ModelledCpuSensor, ModelledRamSensor, RaplSensor, Sensor


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    table = Table(title="EnergyMeter sampler cost (target <= 0.05 ms per sample)")
    columns = ("sensors", "rate", "read ms/sample", "total ms/sample", "% of one core")
    for column in (*columns, "warm ms/read"):
        table.add_column(column, justify="left" if column == "sensors" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        fake_powercap(Path(tmp))
        sets = {
            "none (the meter's floor)": lambda: [],
            "modelled cpu + ram": lambda: [ModelledCpuSensor(), ModelledRamSensor()],
            "fake powercap (5 zones)": lambda: [RaplSensor(tmp)],
        }
        for name, make in sets.items():
            for hz in (10, 100):
                read, total, share = measure(make(), 1 / hz, args.seconds)
                warm = warm_read_ms(make())
                table.add_row(
                    name, f"{hz} Hz", f"{read:.4f}", f"{total:.4f}", f"{share:.3f}", f"{warm:.4f}"
                )
    Console().print(table)


if __name__ == "__main__":
    main()
