"""The regression gate: simulated noise, real runs, thresholds and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carbonbench.cli import main
from carbonbench.compare import (
    CompareError,
    Side,
    Thresholds,
    compare,
    judge,
    load_thresholds,
    markdown,
    noise_floor,
)
from carbonbench.store import Store
from tests.helpers import row

HARDWARE = {"cpu": "Test CPU", "gpus": ["H100"]}


def simulated_run(rng, base: np.ndarray, repeats: int, noise: float, drift: float, scale=None):
    """Per case: a run-level drift (the machine that night) times per-window noise."""
    scale = np.ones_like(base) if scale is None else scale
    samples = {}
    for i, value in enumerate(base):
        night = value * scale[i] * (1 + drift * rng.standard_normal())
        windows = night * (1 + noise * rng.standard_normal(repeats))
        samples[f"case-{i}"] = {
            "energy_per_token": windows.tolist(),
            "time_per_token": (windows * 1e-3).tolist(),
        }
    return samples


def side(name, samples, hardware=HARDWARE, history=None) -> Side:
    return Side(name, samples, hardware, "nightly", history or {})


def test_identical_runs_pass_at_least_99_of_100_comparisons() -> None:
    """30 cases, 2 metrics, 5 repeats; 2% noise per window and 1% between whole runs."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1e-4, 1e-2, 30)
    alarms = 0
    for _ in range(100):
        a = simulated_run(rng, base, 5, noise=0.02, drift=0.01)
        b = simulated_run(rng, base, 5, noise=0.02, drift=0.01)
        alarms += bool(compare(side("a", a), side("b", b)).regressions)
    assert alarms <= 1


def test_a_10_percent_regression_is_caught() -> None:
    """10 repeats at 2% noise, one case 10% worse."""
    rng = np.random.default_rng(1)
    base = rng.uniform(1e-4, 1e-2, 30)
    scale = np.ones(30)
    scale[7] = 1.10
    caught = 0
    for _ in range(100):
        a = simulated_run(rng, base, 10, noise=0.02, drift=0.0)
        b = simulated_run(rng, base, 10, noise=0.02, drift=0.0, scale=scale)
        result = compare(side("a", a), side("b", b))
        flagged = {(v.case_id, v.metric) for v in result.regressions}
        caught += ("case-7", "energy_per_token") in flagged
        assert flagged <= {("case-7", "energy_per_token"), ("case-7", "time_per_token")}
    assert caught >= 99


def test_judge_needs_effect_and_significance() -> None:
    assert judge([1.0, 1.01, 0.99], [1.2, 1.21, 1.19], 0.05)[0] == "regression"
    assert judge([1.0, 1.01, 0.99], [0.8, 0.81, 0.79], 0.05)[0] == "improvement"
    assert judge([1.0, 1.01, 0.99], [1.03, 1.04, 1.02], 0.05)[0] == "unchanged"  # small
    assert judge([1.0, 2.0, 0.5], [1.2, 0.6, 2.5], 0.05)[0] == "unchanged"  # not significant
    verdict, _, _, test = judge([1.0, 1.0], [2.0, 2.0], 0.05)
    assert verdict == "no data" and "3 rounds" in test
    assert judge([100.0], [101.0], 0.05, exact=True)[0] == "regression"
    assert judge([100.0], [100.0], 0.05, exact=True)[0] == "unchanged"


def test_noise_floor_from_history_quiets_a_wandering_case() -> None:
    history = {"case-0": [1.0, 1.06, 0.95, 1.04, 0.97]}  # ~4.5% CV night to night
    assert noise_floor(history["case-0"]) > 0.1
    base = {"case-0": {"energy_per_token": [1.0, 1.01, 0.99, 1.0, 1.0]}}
    moved = {"case-0": {"energy_per_token": [1.08, 1.09, 1.07, 1.08, 1.08]}}
    assert compare(side("a", base), side("b", moved)).regressions
    quiet = compare(side("a", base), side("b", moved, history=history))
    assert not quiet.regressions and "noise floor" in quiet.notes[0]


def test_one_sided_cases_and_hardware_mismatch_are_reported() -> None:
    a = {"x": {"energy_per_token": [1.0] * 3}, "gone": {"energy_per_token": [1.0] * 3}}
    b = {"x": {"energy_per_token": [1.0] * 3}, "new": {"energy_per_token": [1.0] * 3}}
    result = compare(side("a", a), side("b", b))
    assert result.only_baseline == ["gone"] and result.only_current == ["new"]
    other = {"cpu": "Other CPU", "gpus": []}
    with pytest.raises(CompareError, match=r"different hardware.*--allow-hardware-mismatch"):
        compare(side("a", a), side("b", b, hardware=other))
    allowed = compare(side("a", a), side("b", b, hardware=other), allow_hardware_mismatch=True)
    assert "different hardware" in allowed.notes[0]
    text = markdown(result)
    assert "Only in the baseline: `gone`" in text and "| case | metric |" in text


def test_thresholds_per_metric_and_case_glob(tmp_path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text(
        "[thresholds]\nenergy_per_token = 0.08\n\n"
        '[[thresholds.case]]\nmatch = "gpt/*/decode/*"\nenergy_per_token = 0.2\n'
    )
    t = load_thresholds(path)
    assert t.for_case("lstm/tiny/fused/train", "energy_per_token") == 0.08
    assert t.for_case("gpt/tiny/decode/b1", "energy_per_token") == 0.2
    assert t.for_case("gpt/tiny/decode/b1", "time_per_token") == 0.05
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.carbonbench.thresholds]\ntime_per_token = 0.1\n")
    assert load_thresholds(None, pyproject).for_case("any", "time_per_token") == 0.1
    suite = "[matrix]\narch = ['gpt']\n[thresholds]\nparams = 0.0\n"
    assert load_thresholds(None, pyproject, suite).for_case("any", "params") == 0.0
    path.write_text("[thresholds]\njoules = 0.1\n")
    with pytest.raises(CompareError, match="unknown metric 'joules'"):
        load_thresholds(path)
    a = {"c": {"energy_per_token": [1.0, 1.0, 1.0]}}
    b = {"c": {"energy_per_token": [1.1, 1.1, 1.1]}}
    loose = Thresholds({"energy_per_token": 0.15})
    assert not compare(side("a", a), side("b", b), loose).regressions
    assert compare(side("a", a), side("b", b)).regressions


def _store_run(store: Store, run_id: str, energy: float, flops: int = 1000, cpu: str = "CPU"):
    store.begin_run(
        run_id,
        label=None,
        suite_name="s",
        suite_source="s",
        suite_text="",
        started_at="2026-01-01T00:00:00",
        metadata={"cpu": cpu, "gpus": [], "carbon": {}},
    )
    for round, noise in enumerate((0.99, 1.0, 1.01, 1.0, 0.995)):  # five rounds of one window
        store.add_row(
            row(
                run_id,
                0,
                round=round,
                steps=10,
                tokens=80,
                flops=10 * flops,
                params=1000,
                duration_s=1.0 * noise,
                energy_j=energy * noise,
                co2e_g=energy * noise * 1e-4,
            )
        )


def test_cli_exit_codes_and_markdown(tmp_path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        _store_run(store, "base", 10.0)
        _store_run(store, "same", 10.0)
        _store_run(store, "worse", 12.0)
        _store_run(store, "more-flops", 10.0, flops=1001)
        _store_run(store, "elsewhere", 10.0, cpu="Other")
    assert main(["compare", "base", "same", "--db", str(db)]) == 0
    summary = tmp_path / "summary.md"
    assert main(["compare", "base", "worse", "--db", str(db), "--markdown", str(summary)]) == 1
    text = summary.read_text()
    assert text.startswith("### carbonbench compare: 2 regression(s)\n")
    regressed = [line.split(" | ")[1] for line in text.splitlines() if "🔴 regression" in line]
    assert regressed == ["energy_per_token", "co2e_per_1k_tokens"]  # time and FLOPs unchanged
    capsys.readouterr()
    argv = [
        "compare",
        "base",
        "more-flops",
        "--db",
        str(db),
        "--json",
        "--metric",
        "flops_per_step",
        "--metric",
        "params",
    ]
    assert main(argv) == 1
    result = json.loads(capsys.readouterr().out)
    assert [(v["metric"], v["verdict"]) for v in result["verdicts"]] == [
        ("flops_per_step", "regression"),
        ("params", "unchanged"),
    ]
    assert main(["compare", "base", "elsewhere", "--db", str(db)]) == 2
    assert "different hardware" in capsys.readouterr().err
    assert main(["compare", "base", "nope", "--db", str(db)]) == 2
    assert main(["compare", "base", "same", "--db", str(db), "--metric", "joules"]) == 2


def test_a_case_failing_now_fails_the_gate(tmp_path, capsys) -> None:
    """Measured in the baseline, failed in the current run: not a silent 'only in baseline'."""
    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        _store_run(store, "base", 10.0)
        store.begin_run(
            "broken",
            label=None,
            suite_name="s",
            suite_source="s",
            suite_text="",
            started_at="2026-01-02T00:00:00",
            metadata={"cpu": "CPU", "gpus": [], "carbon": {}},
        )
        store.add_row(row("broken", status="failed", error="NaN loss at step 3"))
    summary = tmp_path / "summary.md"
    assert main(["compare", "base", "broken", "--db", str(db), "--markdown", str(summary)]) == 1
    out = capsys.readouterr().out
    assert "failing now gpt/tiny: NaN loss at step 3" in out
    assert "only in the baseline" not in out
    text = summary.read_text()
    assert "1 case(s) failing" in text and "`gpt/tiny`: NaN loss at step 3" in text
    assert "| case | metric |" not in text  # no verdicts: no empty table
    with Store(db) as store:  # measured windows, then a failure: still failing now
        _store_run(store, "partial", 10.0)
        store.add_row(row("partial", repeat=5, status="failed", error="timed out"))
    assert main(["compare", "base", "partial", "--db", str(db)]) == 1
    assert "failing now gpt/tiny: timed out" in capsys.readouterr().out
    assert main(["compare", "partial", "partial", "--db", str(db)]) == 0  # failed in both
    capsys.readouterr()
    assert main(["compare", "broken", "base", "--db", str(db), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["failed_in_current"] == {} and result["passed"] is True
