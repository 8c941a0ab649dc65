"""Change points on synthetic series with known changes and on pure noise, and the command
over a store of synthetic nights."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from carbonbench.analysis.changes import change_points
from carbonbench.cli import main
from carbonbench.results.store import Store
from tests.helpers import begin_run, row


def test_a_step_is_found_where_it_is() -> None:
    rng = np.random.default_rng(1)
    series = np.concatenate([rng.normal(1.0, 0.02, 20), rng.normal(1.15, 0.02, 15)])
    (change,) = change_points(series)
    assert change.index == 20 and change.p_value <= 0.01
    assert change.ratio == pytest.approx(1.15, rel=0.03)


def test_two_steps_are_both_found() -> None:
    rng = np.random.default_rng(2)
    series = np.concatenate(
        [rng.normal(1.0, 0.02, 15), rng.normal(1.3, 0.02, 15), rng.normal(0.9, 0.02, 15)]
    )
    assert [c.index for c in change_points(series)] == [15, 30]


def test_pure_noise_rarely_alarms_even_with_no_minimum_change() -> None:
    alarms = sum(
        bool(change_points(np.random.default_rng(s).normal(1.0, 0.03, 30), min_change=0, seed=s))
        for s in range(60)
    )
    assert alarms <= 4  # alpha 0.01 per test, a few tests per series


def test_a_change_smaller_than_the_minimum_is_not_reported() -> None:
    rng = np.random.default_rng(3)
    series = np.concatenate([rng.normal(1.0, 0.002, 20), rng.normal(1.02, 0.002, 20)])
    assert change_points(series, min_change=0.05) == []
    assert [c.index for c in change_points(series, min_change=0.01)] == [20]


def _nights(db, energies: list[float]) -> list[str]:
    ids = []
    with Store(db) as store:
        for night, energy in enumerate(energies):
            run_id = f"night-{night:02d}"
            ids.append(run_id)
            begin_run(
                store,
                run_id,
                suite_name="nightly",
                suite_source="builtin:nightly",
                started_at=f"2026-10-{night + 1:02d}T02:00:00+00:00",
                metadata={"cpu": "CPU", "gpus": ["H100"]},
            )
            for round in range(3):
                value = energy * (1 + 0.01 * (round - 1))
                store.add_row(
                    row(run_id, 0, round=round, tokens=100, energy_j=value, steps=1, duration_s=1.0)
                )
            store.end_run(run_id, "ok", "now")
    return ids


def test_changes_lists_the_run_that_starts_a_new_level(tmp_path, capsys) -> None:
    rng = np.random.default_rng(4)
    energies = list(np.concatenate([rng.normal(10, 0.1, 14), rng.normal(12, 0.1, 10)]))
    ids = _nights(tmp_path / "n.sqlite", energies)
    assert main(["changes", "--db", str(tmp_path / "n.sqlite"), "--json"]) == 0
    (change,) = json.loads(capsys.readouterr().out)["changes"]
    assert change["case_id"] == "gpt/tiny" and change["metric"] == "energy_per_token"
    assert change["run_id"] == ids[14]
    assert change["ratio"] == pytest.approx(1.2, rel=0.03) and change["p_value"] <= 0.01
    assert main(["changes", "--db", str(tmp_path / "n.sqlite")]) == 0
    assert ids[14] in capsys.readouterr().out


def test_short_history_is_not_searched(tmp_path, capsys) -> None:
    _nights(tmp_path / "s.sqlite", [10.0] * 5 + [20.0] * 5)
    assert main(["changes", "--db", str(tmp_path / "s.sqlite"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"changes": [], "short": ["gpt/tiny"]}
    assert main(["changes", "--db", str(tmp_path / "s.sqlite"), "--metric", "joules"]) == 2


def test_the_report_trend_marks_change_points(tmp_path) -> None:
    from carbonbench.reports.data import load
    from carbonbench.reports.figures import trends

    rng = np.random.default_rng(5)
    energies = list(np.concatenate([rng.normal(10, 0.1, 12), rng.normal(13, 0.1, 8)]))
    ids = _nights(tmp_path / "t.sqlite", energies)
    data = load(tmp_path / "t.sqlite", last=20)
    fig = trends(data.cases, data.runs)
    marks = [trace for trace in fig.data if trace.name == "change point"]
    assert len(marks) == 1
    assert list(marks[0].x) == [data.runs[ids.index(ids[12])].started_at]
    moved = float(re.search(r"([+-][\d.]+)%", marks[0].hovertemplate)[1])
    assert 25 < moved < 35  # 10 -> 13 J


def test_the_nightly_gate_judges_tonight_against_the_level_since_the_last_change(
    tmp_path, capsys
) -> None:
    """`compare latest~1 latest` over a long history: a level reached six nights ago is
    tonight's baseline, not a regression; a jump beyond it tonight is one."""
    rng = np.random.default_rng(6)
    settled = list(np.concatenate([rng.normal(10, 0.1, 12), rng.normal(12, 0.1, 6)]))
    db = tmp_path / "g.sqlite"
    _nights(db, settled)
    assert main(["compare", "latest~1", "latest", "--db", str(db), "--json"]) == 0
    (energy,) = [
        v
        for v in json.loads(capsys.readouterr().out)["verdicts"]
        if v["metric"] == "energy_per_token"
    ]
    assert energy["noise"] == "history" and "level of the last 5 runs" in energy["test"]
    assert energy["ratio"] == pytest.approx(1.0, abs=0.03) and energy["n_history"] == 17
    db = tmp_path / "j.sqlite"
    _nights(db, [*rng.normal(10, 0.1, 14), 11.0])
    assert main(["compare", "latest~1", "latest", "--db", str(db), "--json"]) == 1
    (energy,) = [
        v
        for v in json.loads(capsys.readouterr().out)["verdicts"]
        if v["metric"] == "energy_per_token"
    ]
    assert energy["verdict"] == "regression" and energy["ci_low"] > 1.05
    assert main(["compare", "latest~3", "latest", "--db", str(db), "--json"]) == 1
    (energy,) = [
        v
        for v in json.loads(capsys.readouterr().out)["verdicts"]
        if v["metric"] == "energy_per_token"
    ]
    assert "between-run spread of 14 earlier runs" in energy["test"]  # not the previous night
