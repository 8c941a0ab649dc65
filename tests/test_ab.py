"""``carbonbench ab``: ABBA order, paired verdicts, added pairs, failures and refusals, with a
stand-in command (tests/examples/stand_in.py), and once with the real one."""

from __future__ import annotations

import json
import re
import shlex
import sys

import pytest

from carbonbench.ab import order
from carbonbench.cli import main
from carbonbench.store import Store
from tests.helpers import fast_suite

STAND_IN = shlex.join([sys.executable, "-m", "tests.examples.stand_in"])


def ab(tmp_path, base: str, head: str, *extra: str) -> list[str]:
    return ["ab", "--base", base, "--head", head, "--db", str(tmp_path / "ab.sqlite"), *extra]


def stored(tmp_path):
    with Store(tmp_path / "ab.sqlite", create=False, readonly=True) as store:
        return store.runs()


def test_pairs_alternate_abba_and_are_stored_with_their_comparison(tmp_path, capsys) -> None:
    noisy = STAND_IN + " --values 1.0,1.02,0.99,1.01"
    assert main(ab(tmp_path, noisy, noisy, "--pairs", "4", "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    runs = stored(tmp_path)
    assert [r.label for r in runs] == ["base", "head", "head", "base"] * 2
    assert [order(i) for i in range(2)] == [("base", "head"), ("head", "base")]
    assert {r.metadata["ab"]["comparison"] for r in runs} == {result["comparison"]}
    assert [r.metadata["ab"]["pair"] for r in runs] == [0, 0, 1, 1, 2, 2, 3, 3]
    verdicts = {(v["case_id"], v["metric"]): v for v in result["verdicts"]}
    energy = verdicts[("gpt/tiny/train", "energy_per_token")]
    assert energy["verdict"] == "unchanged" and energy["noise"] == "pairs"
    assert energy["n_current"] == 4 and energy["ci_low"] < 1 < energy["ci_high"]
    assert verdicts[("gpt/tiny/train", "flops_per_step")]["verdict"] == "unchanged"
    assert result["passed"] is True


def test_a_slower_head_is_a_regression_with_its_interval(tmp_path, capsys) -> None:
    base = STAND_IN + " --values 1.0,1.02,0.99,1.01"
    head = STAND_IN + " --values 1.3,1.31,1.29,1.3"
    summary = tmp_path / "ab.md"
    code = main(ab(tmp_path, base, head, "--pairs", "4", "--markdown", str(summary)))
    assert code == 1
    out = capsys.readouterr().out
    assert "regression" in out and "4 pairs" in out
    text = summary.read_text()
    assert text.startswith("### carbonbench ab: 4 regression(s)")  # 2 cases x energy, time
    assert re.search(r"\| \+(29|30)\.\d% \[\+2\d\.\d%, \+3\d\.\d%\] \|", text)
    assert "| 4 pairs |" in text and "paired t-test" in text


def test_a_borderline_result_adds_pairs_up_to_the_maximum(tmp_path, capsys) -> None:
    head = STAND_IN + " --values 1.25,0.95"  # beyond 5% on average, far from significant
    argv = ab(tmp_path, STAND_IN, head, "--pairs", "2", "--max-pairs", "6", "--json")
    assert main(argv) == 0
    assert len(stored(tmp_path)) == 12
    assert "running up to 6 pairs" in capsys.readouterr().err


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
    their merits, never an error."""
    suite = tmp_path / "fast.toml"
    suite.write_text(fast_suite(phases=("infer",)).text)
    cmd = shlex.join([sys.executable, "-m", "carbonbench"])
    argv = ab(tmp_path, cmd, cmd, "--suite", str(suite), "--pairs", "2", "--max-pairs", "2")
    assert main([*argv, "--json"]) in (0, 1)
    result = json.loads(capsys.readouterr().out)
    assert {v["metric"] for v in result["verdicts"]} >= {"energy_per_token", "time_per_token"}
    runs = stored(tmp_path)
    assert [r.label for r in runs] == ["base", "head", "head", "base"]
    assert all(r.status == "ok" for r in runs)


def test_bad_pair_counts_are_refused(tmp_path, capsys) -> None:
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "0")) == 2
    assert main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "4", "--max-pairs", "2")) == 2
    assert "--max-pairs (2) is below --pairs (4)" in _one_line(capsys)
    with pytest.raises(SystemExit) as exit:  # argparse's own refusal, also status 2
        main(ab(tmp_path, STAND_IN, STAND_IN, "--pairs", "x"))
    assert exit.value.code == 2
