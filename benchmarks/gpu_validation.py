"""Check the NVML path on a real GPU: counter against sampled power, idle power, update periods.

Needs an NVIDIA GPU of the Volta generation or newer and torch with CUDA. On the first GPU
torch sees, this script does three things:

1. Update periods. It loads the GPU with bfloat16 matrix products and reads the energy counter,
   the instant power field and nvmlDeviceGetPowerUsage in turn, back to back. For each it
   prints how often the value changes and what one call costs.
2. Idle power. It runs the meter's idle baseline (counter) and, over the same window, takes the
   mean of instant power sampled every 10 ms.
3. Agreement. It runs windows of several lengths under steady load and under on/off load. Each
   window's energy is read from the counter (method ``counter``) and also integrated from
   power samples by the meter's own power-sampled path: instant power every 10 ms and every
   100 ms, and the 1 s averaged power every 100 ms. Windows run in parallel on two meters
   (10 ms and 100 ms), so the figures compared are mean power, energy / duration.

Every window goes into a JSON file and a summary into a Markdown file. The script asserts
nothing: it reports what it measured.

    python benchmarks/gpu_validation.py --out benchmarks/results [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import NvmlSensor


class SampledNvml(NvmlSensor):
    """The product's power-sampled path, on a GPU that also has a counter, for comparison.

    ``instant``: integrate NVML_FI_DEV_POWER_INSTANT (True) or nvmlDeviceGetPowerUsage (False).
    """

    def __init__(self, suffix: str, instant: bool = True) -> None:
        super().__init__()
        self.source = f"nvml{suffix}"
        for gpu in self._gpus:
            gpu.has_counter = False
            gpu.instant_power = gpu.instant_power and instant
            gpu.domain += suffix
        self.domains = tuple(g.domain for g in self._gpus)
        self.methods = ("power-sampled",) * len(self._gpus)


def matmul_load(seconds: float, duty: float = 1.0, period_s: float = 0.2, n: int = 8192) -> int:
    """bfloat16 n x n products for ``seconds``: busy for ``duty`` of every ``period_s``."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    products, end = 0, time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        busy_until = min(end, now + duty * period_s)
        while time.perf_counter() < busy_until:
            for _ in range(4):
                a @ b
            torch.cuda.synchronize()
            products += 4
        if duty < 1.0:
            time.sleep(max(0.0, min(end - time.perf_counter(), (1 - duty) * period_s)))
    return products


@dataclass
class Series:
    """Back-to-back reads of one NVML quantity: when it changed, and what a call costs."""

    name: str
    calls: int = 0
    call_s: float = 0.0
    changes: list[float] = field(default_factory=list)  # perf_counter times of new values
    last: float | None = None

    def add(self, value: float, started: float, ended: float) -> None:
        self.calls += 1
        self.call_s += ended - started
        if value != self.last:
            if self.last is not None:
                self.changes.append(ended)
            self.last = value

    def summary(self) -> dict[str, Any]:
        gaps = [b - a for a, b in zip(self.changes, self.changes[1:], strict=False)]
        quantiles = statistics.quantiles(gaps, n=10) if len(gaps) >= 2 else [float("nan")] * 9
        return {
            "quantity": self.name,
            "calls": self.calls,
            "us_per_call": self.call_s / max(1, self.calls) * 1e6,
            "changes": len(self.changes),
            "update_period_ms_median": statistics.median(gaps) * 1e3 if gaps else None,
            "update_period_ms_p10": quantiles[0] * 1e3,
            "update_period_ms_p90": quantiles[-1] * 1e3,
        }


def instant(pynvml: Any, handle: Any) -> int:
    """NVML_FI_DEV_POWER_INSTANT in mW; NVMLError where the GPU or binding lacks it."""
    field_id = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)
    if field_id is None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    (value,) = pynvml.nvmlDeviceGetFieldValues(handle, [field_id])
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(value.nvmlReturn)
    return value.value.uiVal


def update_periods(nvml_index: int, seconds: float) -> list[dict[str, Any]]:
    """Poll each quantity in turn while a thread keeps the GPU busy."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
        readers: dict[str, Callable[[], float]] = {
            "energy counter (mJ)": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle),
            "instant power (mW)": lambda: instant(pynvml, handle),
            "nvmlDeviceGetPowerUsage (mW)": lambda: pynvml.nvmlDeviceGetPowerUsage(handle),
        }
        for name, read in list(readers.items()):
            try:
                read()
            except pynvml.NVMLError as error:
                print(f"{name}: not supported here ({error})")
                del readers[name]
        series = {name: Series(name) for name in readers}
        load = threading.Thread(target=matmul_load, args=(seconds + 1.0,))
        load.start()
        time.sleep(0.5)  # clocks up
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for name, read in readers.items():
                started = time.perf_counter()
                value = read()
                series[name].add(value, started, time.perf_counter())
        load.join()
        return [s.summary() for s in series.values()]
    finally:
        pynvml.nvmlShutdown()


def first_gpu_domains(meter: EnergyMeter) -> list[str]:
    return [d for d in meter.domains if d == "gpu:0" or d.startswith("gpu:0~")]


def agreement(fast: EnergyMeter, slow: EnergyMeter, load: Callable[[], object], label: str):
    """One window on both meters around ``load``: mean power per method."""
    with fast.window(label) as f, slow.window(label) as s:
        load()
    row: dict[str, Any] = {"window": label, "duration_s": f.duration_s, "mean_w": {}}
    for m in (f, s):
        for domain in first_gpu_domains(fast if m is f else slow):
            row["mean_w"][domain] = m.energy_j[domain] / m.duration_s
    counter = row["mean_w"]["gpu:0"]
    row["relative_to_counter"] = {
        d: w / counter - 1 for d, w in row["mean_w"].items() if d != "gpu:0"
    }
    return row


def machine() -> dict[str, Any]:
    sensor = NvmlSensor()
    try:
        gpu = sensor.constants()["gpus"]["gpu:0"]
        import pynvml

        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu["nvml_index"])
        limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3
        return {
            "gpu": gpu["name"],
            "nvml_index": gpu["nvml_index"],
            "driver": sensor.driver_version(),
            "power_limit_w": limit_w,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "platform": platform.platform(),
        }
    finally:
        sensor.close()


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# NVML validation on {m['gpu']}",
        "",
        f"Driver {m['driver']}, CUDA {m['cuda']}, torch {m['torch']}, power limit "
        f"{m['power_limit_w']:.0f} W, {result['date']}. Written by benchmarks/gpu_validation.py.",
        "",
    ]
    if "error" in result:
        lines += ["", f"**Stopped early:** {result['error']}"]
    if "update_periods" not in result:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Update periods under load (back-to-back reads)",
        "",
        "| quantity | µs per call | changes | median period ms | p10 | p90 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in result["update_periods"]:
        periods = (s[f"update_period_ms_{q}"] for q in ("median", "p10", "p90"))
        cells = ["-" if p is None or math.isnan(p) else f"{p:.1f}" for p in periods]
        lines.append(
            f"| {s['quantity']} | {s['us_per_call']:.1f} | {s['changes']} | "
            + " | ".join(cells)
            + " |"
        )
    if "idle" not in result:
        return "\n".join(lines) + "\n"
    idle = result["idle"]
    lines += [
        "",
        "## Idle power (this process holding a CUDA context, no work queued)",
        "",
        f"Counter: {idle['counter_w']:.1f} W over {idle['seconds']:.0f} s; instant power "
        f"sampled every 10 ms over the same window: {idle['sampled_w']:.1f} W.",
    ]
    if not result.get("windows"):
        return "\n".join(lines) + "\n"
    columns = [d for d in result["windows"][0]["mean_w"] if d != "gpu:0"]
    lines += [
        "",
        "## Counter against power-sampled energy (mean power over each window)",
        "",
        "| window | s | counter W | " + " | ".join(columns) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for w in result["windows"]:
        cells = [
            f"{w['mean_w'][d]:.1f} ({w['relative_to_counter'][d] * 100:+.2f}%)" for d in columns
        ]
        lines.append(
            f"| {w['window']} | {w['duration_s']:.2f} | {w['mean_w']['gpu:0']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Columns: `gpu:0~instant10ms` integrates NVML_FI_DEV_POWER_INSTANT sampled every "
        "10 ms; `gpu:0~instant100ms` the same every 100 ms; `gpu:0~average100ms` integrates "
        "nvmlDeviceGetPowerUsage (averaged by the driver) every 100 ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="shorter windows (a trial run)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_validation: torch sees no CUDA GPU; run this on a GPU machine")
    scale = 0.25 if args.quick else 1.0
    torch.cuda.init()
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        measure(result, scale)
    except Exception as error:  # keep what was measured before it
        result["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        (args.out / "nvml_validation.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "nvml_validation.md").write_text(markdown(result))
        print(markdown(result))


def measure(result: dict[str, Any], scale: float) -> None:
    """Fill ``result`` section by section: update periods, idle power, windows."""
    print(json.dumps(result["machine"]), flush=True)
    result["update_periods"] = update_periods(result["machine"]["nvml_index"], 3.0 * scale)
    print(json.dumps(result["update_periods"], indent=1), flush=True)

    fast = EnergyMeter([NvmlSensor(), SampledNvml("~instant10ms")], interval_s=0.01)
    slow = EnergyMeter(
        [SampledNvml("~instant100ms"), SampledNvml("~average100ms", instant=False)],
        interval_s=0.1,
    )
    with fast, slow:
        torch.ones(1, device="cuda")  # the context exists before idle is measured
        time.sleep(1.0)
        with fast.window("idle") as m:
            time.sleep(10.0 * scale)
        result["idle"] = {
            "seconds": m.duration_s,
            "counter_w": m.energy_j["gpu:0"] / m.duration_s,
            "sampled_w": m.energy_j["gpu:0~instant10ms"] / m.duration_s,
        }
        print(json.dumps(result["idle"]), flush=True)
        matmul_load(2.0 * scale)  # warm-up: clocks and cuBLAS heuristics
        plan = [("steady", s, 1.0, 0.2) for s in (0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 10.0)]
        plan += [("on/off 100 ms", 5.0, 0.5, 0.2)] * 2 + [("on/off 25 ms", 5.0, 0.5, 0.05)]
        result["windows"] = []
        for kind, seconds, duty, period_s in plan:
            seconds *= scale

            def load(seconds=seconds, duty=duty, period_s=period_s) -> None:
                matmul_load(seconds, duty, period_s)

            row = agreement(fast, slow, load, f"{kind}, {seconds:g} s")
            result["windows"].append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
