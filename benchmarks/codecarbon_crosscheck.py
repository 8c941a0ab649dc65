"""carbonbench's EnergyMeter beside codecarbon's tracker: the same work, energy and CPU cost.

1. Energy. The work is gpt `small` training steps on ``--device`` for ``--seconds``. The meter
   (this machine's sensors) and codecarbon's OfflineEmissionsTracker (machine mode) both
   measure it at the same time, each sampling every ``--interval`` seconds. For CPU, RAM and
   GPU the script prints the joules each tool gave, how each got them and their ratio.
   Where both read the same counter (NVML's energy counter on a GPU) they should agree; where
   both model (a CPU with no RAPL), the gap is the gap between their constants, which are
   printed too.
2. Cost. With the process otherwise asleep for ``--seconds``, it takes the process CPU time
   of the meter alone, of the tracker alone and of neither. Cost per sample = (CPU time -
   CPU time of neither) / samples taken. That counts the threads each tool starts and wakes.

    python benchmarks/codecarbon_crosscheck.py [--device cpu|cuda] [--seconds 20]
        [--interval 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from codecarbon import OfflineEmissionsTracker
from rich.console import Console
from rich.table import Table

from carbonbench import models
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import detect_sensors
from carbonbench.execution.workloads import Workload, make_workload

J_PER_KWH = 3.6e6


def group(domain: str) -> str:
    """CPU, RAM or GPU: how codecarbon splits its energy."""
    if domain.startswith("gpu:"):
        return "gpu"
    if domain.startswith("ram:") or domain.startswith("cpu:dram"):
        return "ram"
    return "cpu"


def tracker(interval_s: float, gpu_ids: list[int] | None) -> OfflineEmissionsTracker:
    return OfflineEmissionsTracker(
        country_iso_code="FRA",
        measure_power_secs=interval_s,
        tracking_mode="machine",
        gpu_ids=gpu_ids,
        save_to_file=False,
        log_level="error",
        allow_multiple_runs=True,
    )


def workload_on(device: str) -> Workload:
    """gpt `small` training, built and warmed before either tool starts."""
    torch.manual_seed(0)
    model = models.build("gpt", "small", "fused").to(device)
    dtype = "bfloat16" if device == "cuda" else "float32"
    workload = make_workload(
        model, "train", batch=8, seq_len=128, device=torch.device(device), dtype=dtype
    )
    workload.step()
    return workload


def train_for(workload: Workload, device: str, seconds: float) -> int:
    """Training steps for about ``seconds``; returns how many."""
    steps, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        workload.step()
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return steps


def energy(device: str, seconds: float, interval_s: float) -> dict[str, Any]:
    components = {"gpu", "cpu", "memory"} if device == "cuda" else {"cpu", "memory"}
    detection = detect_sensors(components=components)
    gpu_ids = [0] if device == "cuda" else None
    cc = tracker(interval_s, gpu_ids)
    workload = workload_on(device)
    with EnergyMeter(detection.sensors, interval_s) as meter:
        cc.start()
        with meter.window("work") as m:
            steps = train_for(workload, device, seconds)
        cc.stop()
    data = cc.final_emissions_data  # its breakdown by CPU, RAM and GPU
    ours: dict[str, float] = {}
    methods: dict[str, set[str]] = {}
    for domain, joules in m.energy_j.items():
        if m.additive.get(domain, True):
            ours[group(domain)] = ours.get(group(domain), 0.0) + joules
            methods.setdefault(group(domain), set()).add(f"{domain} ({m.method[domain]})")
    theirs = {
        "cpu": data.cpu_energy * J_PER_KWH,
        "ram": data.ram_energy * J_PER_KWH,
        "gpu": data.gpu_energy * J_PER_KWH,
    }
    return {
        "device": device,
        "steps": steps,
        "carbonbench_duration_s": m.duration_s,
        "codecarbon_duration_s": data.duration,
        "carbonbench_j": ours,
        "carbonbench_methods": {g: sorted(v) for g, v in methods.items()},
        "carbonbench_constants": m.constants,
        "codecarbon_j": theirs,
        "codecarbon_power_w": {
            "cpu": data.cpu_power,
            "ram": data.ram_power,
            "gpu": data.gpu_power,
        },
        "codecarbon_cpu_model": data.cpu_model,
        "codecarbon_gpu_model": data.gpu_model,
    }


class _Nothing:
    """Neither tool: the process's own CPU time while asleep."""

    def samples(self) -> int:
        return 0

    def stop(self) -> int:
        return 0


class _Meter(_Nothing):
    def __init__(self, interval_s: float) -> None:
        self.meter = EnergyMeter(detect_sensors().sensors, interval_s)

    def samples(self) -> int:
        return self.meter.sampler_reads

    def stop(self) -> int:
        reads = self.meter.sampler_reads
        self.meter.close()
        return reads


class _Tracker(_Nothing):
    def __init__(self, interval_s: float) -> None:
        self.calls = 0
        self.tracker = tracker(interval_s, None)
        measure = self.tracker._measure_power_and_energy

        def counted() -> None:
            self.calls += 1
            measure()

        self.tracker._scheduler.function = counted  # its periodic sample
        self.tracker.start()

    def samples(self) -> int:
        return self.calls

    def stop(self) -> int:
        calls = self.calls
        self.tracker.stop()
        return calls


def idle_cpu(tool: _Nothing, seconds: float) -> tuple[float, int, float]:
    """(process CPU seconds, samples, wall seconds) while asleep with ``tool`` running."""
    time.sleep(0.5)  # past start-up
    before = tool.samples()
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu1, t1 = time.process_time(), time.perf_counter()
    return cpu1 - cpu0, tool.stop() - before, t1 - t0


def cost(seconds: float, interval_s: float) -> dict[str, Any]:
    baseline, _, wall = idle_cpu(_Nothing(), seconds)
    out: dict[str, Any] = {"seconds": wall, "baseline_cpu_s": baseline}
    for name, tool in (("carbonbench", _Meter), ("codecarbon", _Tracker)):
        cpu, samples, _ = idle_cpu(tool(interval_s), seconds)
        out[name] = {
            "cpu_s": cpu,
            "samples": samples,
            "ms_per_sample": (cpu - baseline) / samples * 1e3 if samples else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0, help="both tools' sample period")
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args()
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    result = {
        "energy": energy(args.device, args.seconds, args.interval),
        "cost": cost(args.seconds, args.interval),
    }
    e = result["energy"]
    table = Table(
        title=f"The same {e['steps']} gpt small training steps on {args.device}, measured by both"
    )
    for column in ("", "carbonbench J", "codecarbon J", "ratio", "carbonbench: how"):
        table.add_column(column, justify="left" if column in ("", "carbonbench: how") else "right")
    for g in ("cpu", "ram", "gpu"):
        ours, theirs = e["carbonbench_j"].get(g, 0.0), e["codecarbon_j"][g]
        ratio = f"{ours / theirs:.3f}" if theirs else "-"
        how = ", ".join(e["carbonbench_methods"].get(g, [])) or "-"
        table.add_row(g, f"{ours:.1f}", f"{theirs:.1f}", ratio, how)
    console = Console(width=140)
    console.print(table)
    power = e["codecarbon_power_w"]
    console.print(
        f"codecarbon's power: CPU {power['cpu']:.2f} W ({e['codecarbon_cpu_model']}), "
        f"RAM {power['ram']:.2f} W, GPU {power['gpu']:.2f} W; durations "
        f"{e['carbonbench_duration_s']:.2f} s (carbonbench) and "
        f"{e['codecarbon_duration_s']:.2f} s (codecarbon)",
        highlight=False,
    )
    c = result["cost"]
    console.print(
        f"CPU cost per sample at {args.interval:g} s, process otherwise asleep for "
        f"{c['seconds']:.0f} s: carbonbench {c['carbonbench']['ms_per_sample']:.3f} ms "
        f"({c['carbonbench']['samples']} samples), codecarbon "
        f"{c['codecarbon']['ms_per_sample']:.3f} ms ({c['codecarbon']['samples']} samples)",
        highlight=False,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
