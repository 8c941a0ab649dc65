"""pytest plugin: ``energy_benchmark``, pytest-benchmark's ``benchmark`` with energy.

    def test_train_step(energy_benchmark):
        energy_benchmark(step, units=tokens_per_step)   # like benchmark(step)

pytest-benchmark times the function as its own ``benchmark`` fixture does (statistics per call);
then energy rounds, each running the function enough times to last about ``min_round_s`` (energy
counters update only every 10-100 ms) inside one EnergyMeter window, put joules, duration and
CO2e per round, the method per domain and the units of work into ``benchmark.extra_info``. ``pytest
--benchmark-json out.json`` then carries energy, and ``carbonbench compare a.json b.json``
gates on it. The JSON's machine_info gains the sensors and hardware under ``carbonbench``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

_MACHINE = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("carbonbench", "energy of benchmarks (carbonbench)")
    group.addoption("--carbonbench-country", help="ISO3 country for the carbon intensity")
    group.addoption("--carbonbench-intensity", type=float, help="carbon intensity, g CO2e/kWh")
    group.addoption("--carbonbench-pue", type=float, help="power usage effectiveness")
    group.addoption(
        "--carbonbench-min-round-s",
        type=float,
        default=0.5,
        help="shortest measured round in seconds (default 0.5)",
    )


@pytest.fixture(scope="session")
def carbonbench_meter(pytestconfig: pytest.Config):
    """One EnergyMeter for the session: sensors are detected once."""
    import torch

    from carbonbench.energy.meter import EnergyMeter
    from carbonbench.energy.sensors.modelled import cpu_name

    meter = EnergyMeter(interval_s=0.1)
    gpus = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    pytestconfig.stash[_MACHINE] = {
        "hardware": {"cpu": cpu_name(), "gpus": gpus},
        "sensors": {s.source: dict(zip(s.domains, s.methods, strict=True)) for s in meter.sensors},
        "constants": {s.source: s.constants() for s in meter.sensors},
        "diagnostics": [str(d) for d in meter.diagnostics],
    }
    yield meter
    meter.close()


class EnergyBenchmark:
    def __init__(self, benchmark: Any, meter: Any, carbon: Any, min_round_s: float) -> None:
        self.benchmark, self.meter, self.carbon = benchmark, meter, carbon
        self.min_round_s = min_round_s

    def __call__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        units: float = 1,
        rounds: int = 5,
        warmup_rounds: int = 1,
        **kwargs: Any,
    ) -> Any:
        """Benchmark ``fn(*args, **kwargs)``; ``units``: work per call (e.g. tokens).

        First pytest-benchmark times it exactly as its ``benchmark`` fixture does (its
        statistics are per call, as ever); then ``rounds`` energy rounds, each sized to last
        about ``min_round_s`` (energy counters update only every 10-100 ms), measure it."""
        result = self.benchmark(fn, *args, **kwargs)
        calls, start = 0, time.perf_counter()
        while True:  # calibration, and a warm-up: at least one call
            fn(*args, **kwargs)
            calls += 1
            if time.perf_counter() - start >= self.min_round_s:
                break
        iterations = max(1, math.ceil(1.1 * calls))  # a margin: rounds last about min_round_s
        name = self.benchmark.name
        kept = []
        for number in range(warmup_rounds + rounds):
            with self.meter.window(f"{name}/{number}") as m:
                for _ in range(iterations):
                    fn(*args, **kwargs)
            if number >= warmup_rounds:
                kept.append(m)
        energy = [m.total_energy_j for m in kept]
        self.benchmark.extra_info.update(
            {
                "energy_j_per_round": energy,
                "duration_s_per_round": [m.duration_s for m in kept],
                "co2e_g_per_round": [self.carbon.co2e_g(e) for e in energy],
                "units_per_round": units * iterations,
                "iterations_per_round": iterations,
                "energy_method": kept[0].method if kept else {},
                "energy_j_by_domain_per_round": [m.energy_j for m in kept],
                "carbon_intensity_g_per_kwh": self.carbon.intensity.g_per_kwh,
                "carbon_intensity_source": self.carbon.intensity.source,
                "pue": self.carbon.pue,
            }
        )
        return result


@pytest.fixture
def energy_benchmark(benchmark, carbonbench_meter, pytestconfig: pytest.Config) -> EnergyBenchmark:
    from carbonbench.energy.carbon import resolve

    carbon = resolve(
        intensity=pytestconfig.getoption("carbonbench_intensity"),
        country=pytestconfig.getoption("carbonbench_country"),
        pue=pytestconfig.getoption("carbonbench_pue"),
    )
    min_round_s = pytestconfig.getoption("carbonbench_min_round_s")
    if not (math.isfinite(min_round_s) and min_round_s >= 0):
        raise pytest.UsageError(
            f"--carbonbench-min-round-s must be a number of seconds >= 0, got {min_round_s}"
        )
    return EnergyBenchmark(benchmark, carbonbench_meter, carbon, min_round_s)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json) -> None:
    machine = config.stash.get(_MACHINE, None)
    if machine is not None:
        output_json.setdefault("machine_info", {})["carbonbench"] = machine
