"""Projection: published training runs reproduced from their published inputs, and the CLI.

Sources:
- Strubell, Ganesh and McCallum, "Energy and Policy Considerations for Deep Learning in NLP",
  ACL 2019, Table 3 and section 2: kWh = 1.58 x hours x (CPU + DRAM + GPU watts) / 1000 (1.58
  being the PUE), CO2e = 0.954 lbs per kWh.
- Luccioni, Viguier and Ligozat, "Estimating the Carbon Footprint of BLOOM, a 176B Parameter
  Language Model", JMLR 24 (2023): 1,082,990 A100 GPU-hours at the 400 W TDP gave 433,196 kWh;
  at 57 g CO2e/kWh, 24.69 t; embodied 11.2 t (3.64 t of GPUs, 7.57 t of servers: 150 kg per
  GPU, 2,500 kg per 8-GPU server, 6-year life, 85% utilisation).
"""

from __future__ import annotations

import json
import statistics

import pytest

from carbonbench.analysis.estimate import (
    embodied,
    from_compute,
    from_hardware,
    gpu_power,
    job_flops,
)
from carbonbench.cli import main
from carbonbench.energy.carbon import resolve

G_PER_LB = 453.59237
STRUBELL = resolve(intensity=0.954 * G_PER_LB, pue=1.58)


@pytest.mark.parametrize(
    ("run", "watts", "hours", "kwh_pue", "co2e_lbs"),
    [
        ("Transformer (big), 8 x P100", 1515.43, 84, 201, 192),
        ("ELMo, 3 x P100", 517.66, 336, 275, 262),
        ("BERT base, 64 x V100", 12041.51, 79, 1507, 1438),
        ("NAS for the Evolved Transformer, 8 x P100", 1515.43, 274120, 656347, 626155),
    ],
)
def test_strubell_2019(run, watts, hours, kwh_pue, co2e_lbs) -> None:
    # the table's power is the whole machine's (CPU + DRAM + GPUs): one "device"
    estimate = from_hardware(STRUBELL, count=1, power_w=watts, hours=hours)
    assert estimate.energy_kwh == pytest.approx(kwh_pue, rel=0.01), run
    assert estimate.co2e_kg * 1000 / G_PER_LB == pytest.approx(co2e_lbs, rel=0.01), run


def test_luccioni_2022_bloom() -> None:
    gpus, gpu_hours = 384, 1_082_990
    power, source = gpu_power("A100")
    assert power == 400.0 and "A100" in source
    carbon = resolve(intensity=57.0)
    estimate = from_hardware(
        carbon, count=gpus, power_w=power, hours=gpu_hours / gpus, with_embodied=True
    )
    assert estimate.energy_kwh == pytest.approx(433_196, rel=0.01)
    assert estimate.co2e_kg / 1000 == pytest.approx(24.69, rel=0.01)
    assert estimate.embodied_co2e_kg / 1000 == pytest.approx(11.2, rel=0.01)
    assert embodied(1, gpu_hours, gpus_per_server=1) == pytest.approx(
        3636 + 2500 / 150 * 3636, rel=0.01
    )


def test_compute_route_and_flops() -> None:
    assert job_flops(None, 1e9, 2e10, inference=False) == (
        1.2e20,
        "6 N D (training; Kaplan et al. 2020)",
    )
    assert job_flops(None, 1e9, 1e6, inference=True)[0] == 2e15
    with pytest.raises(ValueError, match="not both"):
        job_flops(1e20, 1e9, None, False)
    # 1e21 FLOPs at 100 TFLOP/s on 10 devices: 1e6 s = 277.8 h; at 500 W: 1,389 kWh
    estimate = from_compute(
        resolve(intensity=100.0),
        flops=1e21,
        flops_source="given",
        achieved_tflops=100,
        count=10,
        power_w=500,
    )
    assert estimate.hours == pytest.approx(1e6 / 3600)
    assert estimate.energy_kwh == pytest.approx(1e6 / 3600 * 10 * 500 / 1000)
    assert estimate.co2e_kg == pytest.approx(estimate.energy_kwh * 0.1)


def test_estimate_cli_json(capsys) -> None:
    argv = [
        "estimate",
        "--gpu",
        "H100",
        "--count",
        "8",
        "--hours",
        "10",
        "--pue",
        "1.2",
        "--country",
        "FRA",
        "--embodied",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["energy_kwh"] == pytest.approx(10 * 8 * 700 * 1.2 / 1000)
    assert out["co2e_kg"] == pytest.approx(out["energy_kwh"] * 56.039 / 1000, rel=1e-3)
    assert out["embodied_co2e_kg"] > 0 and "Luccioni" in out["sources"]["embodied"]
    assert out["total_co2e_kg"] == pytest.approx(out["co2e_kg"] + out["embodied_co2e_kg"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hours", "3"], "give --power W"),
        (["--gpu", "TPUv4", "--hours", "1"], "unknown GPU 'TPUv4'"),
        (["--power", "300", "--params", "1e9", "--tokens", "1e9"], "give --achieved-tflops"),
        (["--from-run", "latest", "--params", "1e9", "--tokens", "1e9"], "needs --arch"),
    ],
)
def test_estimate_errors(argv, message, capsys) -> None:
    assert main(["estimate", *argv]) == 2
    assert message in capsys.readouterr().err


def test_projection_from_a_measured_run(tmp_path, capsys) -> None:
    from tests.helpers import fast_suite, run

    _, runner, store = run(fast_suite(), tmp_path)
    rows = store.rows(runner.run_id)
    joules_per_flop = sorted(r.energy_j / r.flops for r in rows)
    argv = [
        "estimate",
        "--from-run",
        "latest",
        "--arch",
        "gpt",
        "--params",
        "1e9",
        "--tokens",
        "1e10",
        "--db",
        str(store.path),
        "--carbon-intensity",
        "100",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    flops = 6 * 1e9 * 1e10
    # one round: one sample, the median of its windows
    assert out["inputs"]["rounds"] == 1
    assert out["inputs"]["joules_per_flop"] == pytest.approx(statistics.median(joules_per_flop))
    low, high = out["energy_kwh_range"]
    assert low <= out["energy_kwh"] <= high
    assert out["energy_kwh"] == pytest.approx(out["inputs"]["joules_per_flop"] * flops / 3.6e6)
    assert "underused" in out["sources"]["uncertainty"]
    argv[4] = "lstm"
    assert main(argv) == 2
    assert "no measured lstm train windows" in capsys.readouterr().err
