"""``carbonbench ab``: ABBA order, paired verdicts, added pairs, failures and refusals, with a
stand-in command (tests/examples/stand_in.py), and once with the real one."""

from __future__ import annotations

import json
import math
import re
import shlex
import sys

import numpy as np
import pytest

from carbonbench.analysis.ab import Ab, AbPlan, Pair, order, paired_comparison
from carbonbench.analysis.compare import Thresholds
from carbonbench.analysis.gate import judge_pairs
from carbonbench.cli import main
from carbonbench.results.store import Store
from tests.helpers import fast_suite

STAND_IN = shlex.join([sys.executable, "-m", "tests.examples.stand_in"])


def ab(tmp_path, base: str, head: str, *extra: str) -> list[str]:
    return ["ab", "--base", base, "--head", head, "--db", str(tmp_path / "ab.sqlite"), *extra]


def stored(tmp_path):
    with Store(tmp_path / "ab.sqlite", create=False, readonly=True) as store:
        return store.runs()


def test_pairs_alternate_abba_and_are_stored_with_their_comparison(tmp_path, capsys) -> None:
    noisy = STAND_IN + " --values 1.0,1.02,0.99,1.01"
    assert main(ab(tmp_path, noisy, noisy, "--pairs", "8", "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    runs = stored(tmp_path)
    assert [r.label for r in runs] == ["base", "head", "head", "base"] * 4
    assert [order(i) for i in range(2)] == [("base", "head"), ("head", "base")]
    assert {r.metadata.ab.comparison for r in runs} == {result["comparison"]}
    assert [r.metadata.ab.pair for r in runs] == [i // 2 for i in range(16)]
    verdicts = {(v["case_id"], v["metric"]): v for v in result["verdicts"]}
    energy = verdicts[("gpt/tiny/train", "energy_per_token")]
    assert energy["verdict"] == "unchanged" and energy["noise"] == "pairs"
    assert energy["n_current"] == 8 and energy["ci_low"] <= 1 <= energy["ci_high"]
    assert re.search(
        r"signed-rank test on 8 per-pair log-ratios \(their sd s = 0\.\d{3}\)", energy["test"]
    )
    assert verdicts[("gpt/tiny/train", "flops_per_step")]["verdict"] == "unchanged"
    assert result["passed"] is True


def test_a_slower_head_is_a_regression_with_its_interval(tmp_path, capsys) -> None:
    base = STAND_IN + " --values 1.0,1.02,0.99,1.01"
    head = STAND_IN + " --values 1.3,1.31,1.29,1.3"
    summary = tmp_path / "ab.md"
    code = main(ab(tmp_path, base, head, "--pairs", "8", "--markdown", str(summary)))
    assert code == 1  # at the first look: 8 pairs all one way, p = 2^-8
    out = capsys.readouterr().out
    assert "regression" in out and "8 pairs" in out
    text = summary.read_text()
    assert text.startswith("### carbonbench ab: 4 regression(s)")  # 2 cases x energy, time
    assert re.search(r"\| \+(29|30)\.\d% \[\+2\d\.\d%, \+3\d\.\d%\] \|", text)
    assert "| 8 pairs |" in text and "signed-rank" in text


def test_a_borderline_result_adds_pairs_up_to_the_maximum(tmp_path, capsys) -> None:
    head = STAND_IN + " --values 1.25,0.95"  # beyond 5% on average, far from significant
    argv = ab(tmp_path, STAND_IN, head, "--pairs", "4", "--max-pairs", "10", "--json")
    assert main(argv) == 0
    assert len(stored(tmp_path)) == 20
    err = capsys.readouterr().err
    assert "running up to 8 pairs" in err and "running up to 10 pairs" in err


def test_looks_grow_by_about_1_6_in_whole_abba_blocks_up_to_the_maximum(tmp_path) -> None:
    def plan(pairs: int, max_pairs: int | None = None) -> AbPlan:
        return AbPlan([], [], [], tmp_path / "ab.sqlite", pairs=pairs, max_pairs=max_pairs)

    assert plan(6).schedule == [6, 10, 16] and plan(6).looks == 3  # the defaults
    assert plan(2, 6).schedule == [2, 4, 6]
    assert plan(4).schedule == [4, 8, 14, 16]
    assert plan(20).schedule == [20]  # more pairs than the default maximum: one look
    assert plan(6, 6).schedule == [6]


class SimulatedAb(Ab):
    """The sequential procedure of ``Ab.run`` (its looks, borderline rule and alpha split) on
    simulated pairs: per case, each run's log time per token has noise ``noise``, and head's
    is ``ratio`` times base's."""

    CASES = ("case-a", "case-b")

    def __init__(self, plan: AbPlan, rng, noise: float, ratio: float) -> None:
        super().__init__(plan)
        self.rng, self.noise, self.ratio = rng, noise, ratio
        self.sides: dict[str, list] = {"base": [], "head": []}

    def _pair(self, index: int) -> None:
        for side, scale in (("base", 1.0), ("head", self.ratio)):
            values = {
                case: {"time_per_token": scale * math.exp(self.noise * self.rng.standard_normal())}
                for case in self.CASES
            }
            self.sides[side].append((values, {}))
        self.pairs.append(Pair(index, "", ""))

    def judge(self):
        return paired_comparison(self.sides["base"], self.sides["head"], self.plan)


def simulate(tmp_path, noise: float, ratio: float, trials: int, threshold: float = 0.05):
    """(share of trials that fired, mean pairs used) with the default pairs and looks."""
    rng = np.random.default_rng(7)
    thresholds = Thresholds(default={"time_per_token": threshold})
    plan = AbPlan([], [], [], tmp_path / "x", thresholds=thresholds, metrics=("time_per_token",))
    fired, pairs = 0, 0
    for _ in range(trials):
        ab = SimulatedAb(plan, rng, noise, ratio)
        fired += not ab.run().passed
        pairs += len(ab.pairs)
    return fired / trials, pairs / trials


@pytest.mark.parametrize("noise", [0.03, 0.11, 0.25])
def test_identical_sides_rarely_fire_at_any_noise_even_testing_against_no_change(
    tmp_path, noise
) -> None:
    """Two cases, three looks: alpha split across both keeps the false alarms at most 5%, even
    with a threshold of 0 where every look is a plain significance test."""
    rate, pairs = simulate(tmp_path, noise, 1.0, 400, threshold=0.0)
    assert rate <= 0.05
    rate, pairs = simulate(tmp_path, noise, 1.0, 400)
    assert rate <= 0.02 and pairs < 12  # most settle at 6 or 10 pairs, few go on to 16


def test_the_default_pairs_and_looks_catch_25_percent_at_this_machines_noise(tmp_path) -> None:
    """Per-pair noise 0.155 (benchmarks/results/gate_calibration.md: runs with noise 0.11 a
    side): a 25% slowdown is caught in at least 90% of comparisons, +50% in nearly all by the
    second look (with two cases, 6 pairs cannot reach p <= 0.05 / 6: 2^-6 > 0.0083); a 10%
    one (beyond t = 5%, inside the noise) mostly not."""
    rate, pairs = simulate(tmp_path, 0.11, 1.25, 300)
    assert rate >= 0.9 and pairs > 10  # close results looked at a third time
    rate, pairs = simulate(tmp_path, 0.11, 1.5, 200)
    assert rate >= 0.99 and pairs <= 10.5
    rate, _ = simulate(tmp_path, 0.11, 1.1, 200)
    assert rate < 0.5


def test_one_wildly_disturbed_run_does_not_hide_a_slowdown() -> None:
    """Ten pairs 25-40% slower in head, one of them 30 times (a stalled process): ranks count
    it as one more slower pair, where a t-test's spread would swallow the change."""
    base = [1.0] * 10
    head = [1.3, 30.0, 1.28, 1.35, 1.25, 1.4, 1.3, 1.27, 1.33, 1.29]
    judged = judge_pairs(base, head, 0.05, 0.05 / 6)
    assert judged.verdict == "regression" and 1.25 < judged.ratio < 1.4
    logs = np.log(head)
    t = (logs.mean() - math.log(1.05)) / (logs.std(ddof=1) / math.sqrt(logs.size))
    assert t < 2  # the t statistic the same pairs give: nowhere near significant


def test_a_plan_that_cannot_fire_is_refused_after_the_first_pair(tmp_path, capsys) -> None:
    """Two cases, one look: alpha 0.025 a test, and 4 pairs reach at best p = 1/16."""
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "4", "--max-pairs", "4")) == 2
    assert "--max-pairs 4 can never show a regression" in _one_line(capsys)
    assert len(stored(tmp_path)) == 2  # one pair, kept


def test_a_settled_result_stops_at_the_first_look(tmp_path, capsys) -> None:
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "2", "--max-pairs", "8")) == 0
    assert len(stored(tmp_path)) == 4


def test_a_case_failing_in_head_only_fails_the_gate(tmp_path, capsys) -> None:
    failing = STAND_IN + " --fail gpt/tiny/infer"
    assert main(ab(tmp_path, STAND_IN, failing, "--pairs", "2", "--json")) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["failed_in_current"] == {"gpt/tiny/infer": "NaN loss"}
    assert main(ab(tmp_path, failing, failing, "--pairs", "2", "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert any("failing in base and head alike" in n for n in result["notes"])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("carbonbench: error:")
    return err[-1]


def test_a_command_that_makes_no_run_is_exit_2_never_1(tmp_path, capsys) -> None:
    assert main(ab(tmp_path, STAND_IN + " --exit 2", STAND_IN, "--pairs", "2")) == 2
    line = _one_line(capsys)
    assert "the base command" in line and "the stand-in was told to fail" in line
    assert main(ab(tmp_path, STAND_IN, STAND_IN + " --exit 1", "--pairs", "2")) == 2
    assert main(ab(tmp_path, "no-such-carbonbench", STAND_IN, "--pairs", "2")) == 2
    assert "cannot start the base command 'no-such-carbonbench'" in _one_line(capsys)
    assert main(ab(tmp_path, "'unclosed", STAND_IN)) == 2
    assert "cannot be split" in _one_line(capsys)
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "1")) == 2
    assert "--pairs must be at least 2" in _one_line(capsys)
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--metric", "joules")) == 2


def test_an_interrupted_side_stops_the_comparison_and_keeps_its_runs(tmp_path, capsys) -> None:
    assert main(ab(tmp_path, STAND_IN, STAND_IN + " --exit 130", "--pairs", "2")) == 130
    assert "every finished run is in" in capsys.readouterr().err
    assert [r.label for r in stored(tmp_path)] == ["base"]


def test_the_real_command_on_both_sides(tmp_path, capsys) -> None:
    """Two pairs of real one-round runs of a tiny suite: stored, judged, passed or not on
    their merits, never an error (alpha 0.5: two pairs reach p = 1/4 at best)."""
    suite = tmp_path / "fast.toml"
    suite.write_text(fast_suite(phases=("infer",)).text)
    cmd = shlex.join([sys.executable, "-m", "carbonbench"])
    argv = ab(tmp_path, cmd, cmd, "--suite", str(suite), "--pairs", "2", "--max-pairs", "2")
    assert main([*argv, "--alpha", "0.5", "--json"]) in (0, 1)
    result = json.loads(capsys.readouterr().out)
    assert {v["metric"] for v in result["verdicts"]} >= {"energy_per_token", "time_per_token"}
    runs = stored(tmp_path)
    assert [r.label for r in runs] == ["base", "head", "head", "base"]
    assert all(r.status == "ok" for r in runs)
    # the first run measured the idle baseline; the other three reused it, and say so
    source = f"run {runs[0].run_id} (base of pair 1)"
    assert runs[0].metadata.idle_source is None and runs[0].metadata.idle_w
    assert all(r.metadata.idle_source == source for r in runs[1:])
    assert all(r.metadata.idle_w == runs[0].metadata.idle_w for r in runs[1:])
    assert any(
        f"idle baseline measured once, by {source}, and reused by 3" in n for n in result["notes"]
    )


def test_bad_pair_counts_are_refused(tmp_path, capsys) -> None:
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "0")) == 2
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "4", "--max-pairs", "2")) == 2
    assert "--max-pairs (2) is below --pairs (4)" in _one_line(capsys)
    with pytest.raises(SystemExit) as exit:  # argparse's own refusal, also status 2
        main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "x"))
    assert exit.value.code == 2
