"""The regression gate: its statistics on simulated runs (A/A at many noise levels, known
shifts), history and the nightly level, thresholds, refusals and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carbonbench.analysis.compare import (
    CompareError,
    Side,
    Thresholds,
    compare,
    load_thresholds,
    markdown,
)
from carbonbench.analysis.gate import judge_exact, judge_pairs, judge_runs
from carbonbench.cli import main
from carbonbench.results.store import Store
from tests.helpers import row

HARDWARE = {"cpu": "Test CPU", "gpus": ["H100"]}
CASES = 10


def simulated_run(rng, base: np.ndarray, rounds: int, noise: float, drift: float, scale=None):
    """Per case: the run's own shift (the machine that night: ``drift``) times per-round
    noise; the metrics of a case share them, as energy and time of one window do."""
    scale = np.ones_like(base) if scale is None else scale
    night = 1 + drift * rng.standard_normal()  # one machine state for the whole run
    samples = {}
    for i, value in enumerate(base):
        values = value * scale[i] * night * np.exp(noise * rng.standard_normal(rounds))
        samples[f"case-{i}"] = {
            "energy_per_token": values.tolist(),
            "time_per_token": (values * 1e-3).tolist(),
        }
    return samples


def side(name, samples, hardware=HARDWARE, history=None, previous=None) -> Side:
    return Side(name, samples, hardware, "nightly", history or {}, previous)


def simulated_history(rng, base, runs: int, noise: float, drift: float):
    """``runs`` earlier runs' values (median over rounds) per case and metric."""
    nights = [simulated_run(rng, base, 5, noise, drift) for _ in range(runs)]
    return {
        case: {m: [float(np.median(n[case][m])) for n in nights] for m in nights[0][case]}
        for case in nights[0]
    }


# (per-round noise, between-run drift): the floor is made for runs differing by up to ~10%
NOISE_LEVELS = [(0.01, 0.0), (0.02, 0.02), (0.05, 0.05), (0.1, 0.1), (0.03, 0.1)]


@pytest.mark.parametrize(("noise", "drift"), NOISE_LEVELS)
def test_identical_code_rarely_alarms_without_history(noise, drift) -> None:
    """A/A, 10 cases of 5 rounds, no history: the run-to-run drift the rounds cannot see is
    what the unknown-noise floor is for. At most 5% of comparisons may fire."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1e-4, 1e-2, CASES)
    alarms = 0
    for _ in range(200):
        a, b = (simulated_run(rng, base, 5, noise, drift) for _ in range(2))
        alarms += not compare(side("a", a), side("b", b)).passed
    assert alarms <= 10


@pytest.mark.parametrize(("noise", "drift"), NOISE_LEVELS)
def test_identical_code_rarely_alarms_with_history(noise, drift) -> None:
    """A/A with 12 earlier runs: the history's spread is the noise to beat."""
    rng = np.random.default_rng(1)
    base = rng.uniform(1e-4, 1e-2, CASES)
    alarms = 0
    for _ in range(200):
        history = simulated_history(rng, base, 12, noise, drift)
        a, b = (simulated_run(rng, base, 5, noise, drift) for _ in range(2))
        alarms += not compare(side("a", a), side("b", b, history=history)).passed
    assert alarms <= 10


def test_a_doubling_is_a_regression_even_without_history() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(1e-4, 1e-2, CASES)
    scale = np.ones(CASES)
    scale[7] = 2.0
    caught = 0
    for _ in range(100):
        a = simulated_run(rng, base, 5, noise=0.05, drift=0.05)
        b = simulated_run(rng, base, 5, noise=0.05, drift=0.05, scale=scale)
        result = compare(side("a", a), side("b", b))
        flagged = {(v.case_id, v.metric) for v in result.regressions}
        assert flagged <= {("case-7", "energy_per_token"), ("case-7", "time_per_token")}
        caught += ("case-7", "time_per_token") in flagged
    assert caught >= 95


def test_a_shift_inside_the_unknown_noise_is_inconclusive_not_a_regression() -> None:
    judgement = judge_runs([1.0, 1.01, 0.99, 1.0, 1.0], [1.15, 1.16, 1.14, 1.15, 1.15], 0.05)
    assert judgement.verdict == "inconclusive" and judgement.noise == "unknown"
    assert judgement.threshold == 0.3 and "noise unknown" in judgement.test
    low, high = judgement.ci
    assert low < 1.15 < high and judgement.ratio == pytest.approx(1.15, rel=1e-3)
    assert judge_runs([1.0] * 2, [2.0] * 2, 0.05).verdict == "no data"  # 2 rounds, no history


def test_with_history_a_25_percent_shift_is_found_where_runs_differ_by_2_percent() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(1e-4, 1e-2, CASES)
    scale = np.ones(CASES)
    scale[3] = 1.25
    caught = 0
    for _ in range(100):
        history = simulated_history(rng, base, 12, noise=0.01, drift=0.02)
        a = simulated_run(rng, base, 5, noise=0.01, drift=0.02)
        b = simulated_run(rng, base, 5, noise=0.01, drift=0.02, scale=scale)
        result = compare(side("a", a), side("b", b, history=history))
        caught += ("case-3", "energy_per_token") in {
            (v.case_id, v.metric) for v in result.regressions
        }
    assert caught >= 90


def test_a_wandering_history_quiets_a_shift_it_often_shows() -> None:
    history = [1.0, 1.06, 0.95, 1.04, 0.97, 1.08, 0.93]  # ~5% between runs
    rounds = [1.0, 1.01, 0.99, 1.0, 1.0]
    moved = [1.12, 1.13, 1.11, 1.12, 1.12]
    assert judge_runs(rounds, moved, 0.05, history=history).verdict == "unchanged"
    steady = [1.0, 1.005, 0.995, 1.0, 1.002, 0.998, 1.0]
    judgement = judge_runs(rounds, moved, 0.05, history=steady)
    assert judgement.verdict == "regression" and judgement.noise == "history"


def test_the_nightly_rule_judges_against_the_level_since_the_last_change() -> None:
    rng = np.random.default_rng(4)
    history = np.concatenate([rng.normal(1.0, 0.01, 12), rng.normal(1.3, 0.01, 8)]).tolist()
    tonight = [1.3, 1.31, 1.29]  # at the new level: no regression against it
    level = judge_runs([history[-1]], tonight, 0.05, history=history, level=True)
    assert level.verdict == "unchanged" and "last 8 runs" in level.test
    assert level.ratio == pytest.approx(1.0, abs=0.02)
    jump = judge_runs([history[-1]], [1.45, 1.46, 1.44], 0.05, history=history, level=True)
    assert jump.verdict == "regression" and jump.p_value <= 0.05


def test_the_nightly_gate_is_used_when_the_baseline_is_the_previous_run() -> None:
    rng = np.random.default_rng(5)
    base = rng.uniform(1e-4, 1e-2, CASES)
    history = simulated_history(rng, base, 12, noise=0.01, drift=0.02)
    a = simulated_run(rng, base, 5, 0.01, 0.02)
    b = simulated_run(rng, base, 5, 0.01, 0.02)
    nightly = compare(side("a", a), side("b", b, history=history, previous="a"))
    assert all("level of the last" in v.test for v in nightly.verdicts if v.noise == "history")
    other = compare(side("x", a), side("b", b, history=history, previous="a"))
    assert all("between-run spread" in v.test for v in other.verdicts if v.noise == "history")


def test_paired_judge_finds_a_25_percent_slowdown_and_ignores_drift() -> None:
    rng = np.random.default_rng(6)
    caught = alarms = 0
    for _ in range(200):
        drift = np.exp(0.1 * rng.standard_normal(6))  # the machine moves between pairs
        base = drift * np.exp(0.04 * rng.standard_normal(6))
        same = drift * np.exp(0.04 * rng.standard_normal(6))
        slow = 1.25 * drift * np.exp(0.04 * rng.standard_normal(6))
        alarms += judge_pairs(base, same, 0.05).verdict == "regression"
        caught += judge_pairs(base, slow, 0.05).verdict == "regression"
    assert alarms <= 10 and caught >= 190
    assert judge_pairs([1.0], [2.0], 0.05).verdict == "no data"


def test_exact_metrics_change_on_any_difference() -> None:
    assert judge_exact([100.0], [101.0]).verdict == "regression"
    assert judge_exact([100.0], [99.0]).verdict == "improvement"
    assert judge_exact([100.0], [100.0]).verdict == "unchanged"


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
    steady = {"c": {"energy_per_token": [1.0, 1.001, 0.999, 1.0]}}
    loose = Thresholds({"energy_per_token": 0.15})
    assert not compare(side("a", a), side("b", b, history=steady), loose).regressions
    assert compare(side("a", a), side("b", b, history=steady)).regressions


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
        _store_run(store, "doubled", 20.0)
        _store_run(store, "more-flops", 10.0, flops=1001)
        _store_run(store, "elsewhere", 10.0, cpu="Other")
    assert main(["compare", "base", "same", "--db", str(db)]) == 0
    capsys.readouterr()
    # no history yet (two earlier runs): 20% more is inside the unknown noise, not a regression
    assert main(["compare", "base", "worse", "--db", str(db), "--all"]) == 0
    out = capsys.readouterr().out
    assert "inconclusive" in out and "between-run noise unknown" in out
    summary = tmp_path / "summary.md"
    assert main(["compare", "base", "doubled", "--db", str(db), "--markdown", str(summary)]) == 1
    text = summary.read_text()
    assert text.startswith("### carbonbench compare: 2 regression(s)\n")
    regressed = [line.split(" | ")[1] for line in text.splitlines() if "🔴 regression" in line]
    assert regressed == ["energy_per_token", "co2e_per_1k_tokens"]  # time and FLOPs unchanged
    assert "+100.0% [+" in text and "5+5 rounds, noise unknown" in text
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
