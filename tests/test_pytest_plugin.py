"""The energy_benchmark fixture inside a real pytest run, and compare on its JSON."""

from __future__ import annotations

import json

from carbonbench.analysis.compare import (  # before pytester's module snapshot
    compare,
    side_from_benchmark_json,
)
from carbonbench.cli import main

BENCH = """
def work():
    return sum(i * i for i in range(20000))

def test_squares(energy_benchmark):
    assert energy_benchmark(work, units=20000, rounds=3) > 0
"""


def test_energy_benchmark_writes_energy_into_the_json(pytester, tmp_path) -> None:
    pytester.makepyfile(test_energy=BENCH)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        result = pytester.runpytest_subprocess(
            f"--benchmark-json={out}",
            "--carbonbench-min-round-s=0.2",
            "--carbonbench-intensity=100",
            "-p",
            "no:cacheprovider",
        )
        result.assert_outcomes(passed=1)
        outputs.append(out)
    data = json.loads(outputs[0].read_text())
    (bench,) = data["benchmarks"]
    extra = bench["extra_info"]
    assert len(extra["energy_j_per_round"]) == 3 and min(extra["energy_j_per_round"]) > 0
    assert extra["units_per_round"] == 20000 * extra["iterations_per_round"]
    assert extra["iterations_per_round"] >= 1
    # pytest-benchmark's own statistics stay per call, far shorter than an energy round
    assert bench["stats"]["median"] < min(extra["duration_s_per_round"]) / 2
    assert extra["carbon_intensity_g_per_kwh"] == 100
    assert set(extra["energy_method"].values()) <= {"counter", "power-sampled", "modelled"}
    machine = data["machine_info"]["carbonbench"]
    assert machine["hardware"]["cpu"] and machine["sensors"]
    result = compare(side_from_benchmark_json(outputs[0]), side_from_benchmark_json(outputs[1]))
    assert {v.metric for v in result.verdicts} == {
        "energy_per_token",
        "time_per_token",
        "co2e_per_1k_tokens",
    }
    assert result.verdicts[0].case_id.endswith("test_energy.py::test_squares")
    # a real pair of runs: either verdict may come out, and the CLI's exit status says which
    assert main(["compare", str(outputs[0]), str(outputs[1])]) == (0 if result.passed else 1)


def test_compare_refuses_json_without_energy_or_stats(tmp_path, capsys) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"benchmarks": [{"fullname": "t", "extra_info": {}}]}))
    assert main(["compare", str(plain), str(plain)]) == 2
    assert "has neither energy (extra_info) nor stats" in capsys.readouterr().err


MIN_ROUND_ZERO = """
def test_fast(energy_benchmark):
    assert energy_benchmark(lambda: 1, rounds=2) == 1
"""


def test_min_round_s_zero_runs_one_call_per_round(pytester) -> None:
    pytester.makepyfile(test_zero=MIN_ROUND_ZERO)
    result = pytester.runpytest_subprocess("--carbonbench-min-round-s=0", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
