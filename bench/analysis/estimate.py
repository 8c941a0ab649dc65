"""Projection and planning: energy and emissions of a job before (or without) running it.

Three ways to get the energy, each stated in the result:
- hardware and time: kWh = hours x devices x average W per device x PUE / 1000 (the form of
  Patterson et al., 2021; with the whole machine's power as one "device" and PUE 1.58 it is
  Strubell et al., 2019);
- compute: hours = FLOPs / (achieved FLOP/s per device x devices), FLOPs = 6 N D to train
  (Kaplan et al., 2020), about 2 N per token to infer; then as above;
- a measured run: joules per FLOP measured by carbonbench for an architecture on a device and
  dtype, times the FLOPs of the job, with the spread of the measurement as the uncertainty.
Embodied emissions (``embodied=True``): manufacturing CO2e of the GPUs and servers, amortised
over their lifetime and utilisation, for the hours the job holds them (Luccioni et al., 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbonbench.energy.carbon import J_PER_KWH, CarbonSettings
from carbonbench.errors import InputError

# Board power (TDP) from NVIDIA's datasheets: an upper bound of average draw, which measured
# averages sit below (often well below); give --power when you know better.
GPU_TDP_W: dict[str, tuple[float, str]] = {
    "B200": (1000.0, "NVIDIA DGX B200 datasheet (up to 1000 W per GPU)"),
    "H200": (700.0, "NVIDIA H200 datasheet (SXM, up to 700 W)"),
    "H100": (700.0, "NVIDIA H100 datasheet (SXM, up to 700 W)"),
    "H100-PCIE": (350.0, "NVIDIA H100 datasheet (PCIe, 350 W)"),
    "A100": (400.0, "NVIDIA A100 datasheet (SXM, 400 W)"),
    "A100-PCIE": (300.0, "NVIDIA A100 80GB PCIe datasheet (300 W)"),
    "L40S": (350.0, "NVIDIA L40S datasheet (350 W)"),
    "A10": (150.0, "NVIDIA A10 datasheet (150 W)"),
    "L4": (72.0, "NVIDIA L4 datasheet (72 W)"),
    "T4": (70.0, "NVIDIA T4 datasheet (70 W)"),
    "V100": (300.0, "NVIDIA V100 datasheet (SXM2, 300 W)"),
    "P100": (250.0, "NVIDIA P100 datasheet (PCIe, 250 W)"),
    "RTX4090": (450.0, "NVIDIA GeForce RTX 4090 specifications (450 W)"),
}

# Luccioni, Viguier and Ligozat, "Estimating the Carbon Footprint of BLOOM, a 176B Parameter
# Language Model", JMLR 24 (2023): 150 kg CO2e per GPU, 2,500 kg per server, 6-year life,
# 85% utilisation.
EMBODIED_GPU_KG = 150.0
EMBODIED_SERVER_KG = 2500.0
LIFETIME_YEARS = 6.0
UTILISATION = 0.85
GPUS_PER_SERVER = 8
EMBODIED_SOURCE = (
    "Luccioni et al. 2022 (BLOOM, JMLR 2023): 150 kg CO2e per GPU, 2,500 kg per server, "
    "6-year lifetime, 85% utilisation"
)


@dataclass
class Estimate:
    energy_kwh: float
    co2e_kg: float
    hours: float | None
    method: str
    inputs: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    embodied_co2e_kg: float | None = None
    energy_kwh_range: tuple[float, float] | None = None  # 95% interval, when measured

    @property
    def total_co2e_kg(self) -> float:
        return self.co2e_kg + (self.embodied_co2e_kg or 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "energy_kwh": self.energy_kwh,
            "energy_kwh_range": list(self.energy_kwh_range) if self.energy_kwh_range else None,
            "co2e_kg": self.co2e_kg,
            "embodied_co2e_kg": self.embodied_co2e_kg,
            "total_co2e_kg": self.total_co2e_kg,
            "hours": self.hours,
            "method": self.method,
            "inputs": self.inputs,
            "sources": self.sources,
        }


def gpu_power(model: str) -> tuple[float, str]:
    key = model.upper().replace(" ", "-")
    if key not in GPU_TDP_W:
        raise InputError(f"unknown GPU {model!r}; known: {', '.join(GPU_TDP_W)}; or give --power W")
    return GPU_TDP_W[key]


def job_flops(flops: float | None, params: float | None, tokens: float | None, inference: bool):
    """FLOPs of the job and how they were obtained."""
    if flops is not None:
        if params is not None or tokens is not None:
            raise InputError("give --flops, or --params with --tokens, not both")
        return float(flops), "given"
    if params is None or tokens is None:
        raise InputError("give --flops, or both --params and --tokens")
    if inference:
        return 2.0 * params * tokens, "2 N per token (inference; Kaplan et al. 2020)"
    return 6.0 * params * tokens, "6 N D (training; Kaplan et al. 2020)"


def embodied(count: int, hours: float, gpus_per_server: int = GPUS_PER_SERVER) -> float:
    """kg CO2e of manufacturing, amortised over the hours the job holds ``count`` GPUs."""
    servers = math.ceil(count / gpus_per_server)
    life_hours = LIFETIME_YEARS * 365 * 24 * UTILISATION
    return hours * (count * EMBODIED_GPU_KG + servers * EMBODIED_SERVER_KG) / life_hours


def from_hardware(
    carbon: CarbonSettings,
    *,
    count: int,
    power_w: float,
    hours: float,
    power_source: str = "given",
    with_embodied: bool = False,
    inputs: dict[str, Any] | None = None,
) -> Estimate:
    if count < 1 or not (math.isfinite(power_w) and math.isfinite(hours)):
        raise InputError("count, power and hours must be positive, finite numbers")
    if power_w <= 0 or hours <= 0:
        raise InputError("count, power and hours must be positive, finite numbers")
    kwh = hours * count * power_w * carbon.pue / 1000
    estimate = Estimate(
        energy_kwh=kwh,
        co2e_kg=kwh * carbon.intensity.g_per_kwh / 1000,
        hours=hours,
        method="hours x devices x average W per device x PUE",
        inputs={"count": count, "power_w": power_w, "hours": hours, "pue": carbon.pue}
        | (inputs or {}),
        sources=_sources(carbon) | {"power": power_source},
    )
    if with_embodied:
        estimate.embodied_co2e_kg = embodied(count, hours)
        estimate.sources["embodied"] = EMBODIED_SOURCE
    return estimate


def _sources(carbon: CarbonSettings) -> dict[str, str]:
    return {"carbon_intensity": carbon.intensity.source, "pue": carbon.pue_source}


def from_compute(
    carbon: CarbonSettings,
    *,
    flops: float,
    flops_source: str,
    achieved_tflops: float,
    count: int,
    power_w: float,
    power_source: str = "given",
    with_embodied: bool = False,
) -> Estimate:
    if achieved_tflops <= 0:
        raise InputError(f"--achieved-tflops must be positive, got {achieved_tflops}")
    hours = flops / (achieved_tflops * 1e12 * count) / 3600
    estimate = from_hardware(
        carbon,
        count=count,
        power_w=power_w,
        hours=hours,
        power_source=power_source,
        with_embodied=with_embodied,
        inputs={"flops": flops, "achieved_tflops_per_device": achieved_tflops},
    )
    estimate.method = "FLOPs / (achieved FLOP/s x devices) = hours; then " + estimate.method
    estimate.sources["flops"] = flops_source
    return estimate


def from_measurement(
    carbon: CarbonSettings,
    *,
    joules_per_flop: list[float],
    flops: float,
    flops_source: str,
    run: str,
    arch: str,
    device: str,
    dtype: str,
) -> Estimate:
    """Scale joules per FLOP measured in a run to the FLOPs of another job."""
    import numpy as np

    from carbonbench.stats import bootstrap_ci

    if not joules_per_flop:
        raise InputError(f"run {run} has no measured {arch} windows with FLOPs to project from")
    median = float(np.median(joules_per_flop))
    low, high = bootstrap_ci(joules_per_flop)
    kwh = median * flops * carbon.pue / J_PER_KWH
    return Estimate(
        energy_kwh=kwh,
        co2e_kg=kwh * carbon.intensity.g_per_kwh / 1000,
        hours=None,
        method="joules per FLOP measured in a run x FLOPs of the job x PUE",
        inputs={
            "run": run,
            "arch": arch,
            "device": device,
            "dtype": dtype,
            "joules_per_flop": median,
            "rounds": len(joules_per_flop),
            "flops": flops,
            "pue": carbon.pue,
        },
        sources=_sources(carbon)
        | {
            "flops": flops_source,
            "uncertainty": "95% bootstrap interval of the measured joules per FLOP; it assumes "
            "joules per FLOP stay the same at the projected size, which holds only roughly: "
            "small models leave the device underused, so projecting up tends to overestimate",
        },
        energy_kwh_range=(
            low * flops * carbon.pue / J_PER_KWH,
            high * flops * carbon.pue / J_PER_KWH,
        ),
    )


def joules_per_flop_by_round(rows: list) -> list[float]:
    """One joules-per-FLOP value per round of each case (the median of its windows): rounds,
    not windows, are the independent samples the interval is built on."""
    from carbonbench.results.metrics import round_values

    return [v / 1e12 for values in round_values(rows, "j_per_tflop").values() for v in values]


def from_run(
    db: str | Path,
    ref: str,
    carbon: CarbonSettings,
    *,
    arch: str,
    phase: str,
    flops: float,
    flops_source: str,
) -> Estimate:
    """Project from the joules per FLOP a stored run measured for ``arch`` in ``phase``, on
    the device and dtype of its first such window."""
    from carbonbench.results.store import Store

    with Store(db, create=False, readonly=True) as store:
        run_id = store.resolve(ref)
        rows = [
            r
            for r in store.rows(run_id)
            if r.arch == arch and r.phase == phase and r.ok and r.flops
        ]
    if not rows:
        raise InputError(f"run {run_id} has no measured {arch} {phase} windows")
    first = rows[0]
    rows = [r for r in rows if (r.device, r.dtype) == (first.device, first.dtype)]
    return from_measurement(
        carbon,
        joules_per_flop=joules_per_flop_by_round(rows),
        flops=flops,
        flops_source=flops_source,
        run=run_id,
        arch=arch,
        device=first.device,
        dtype=first.dtype,
    )
