"""Tables as CI logs show them: output captured, not a terminal, so rich would otherwise wrap
at 80 columns and split intervals and refs."""

from __future__ import annotations

import argparse
import re

import pytest

from carbonbench.cli import main
from carbonbench.cli.common import UNLIMITED, make_console
from carbonbench.cli.run import _print_result
from carbonbench.energy.carbon import resolve
from carbonbench.results.store import Store
from tests.helpers import begin_run, row

LABEL = "a label long enough that the runs table is wider than eighty columns on its own " * 2
ERROR = "RuntimeError: the worker ran out of memory while building the case " * 2


@pytest.fixture(autouse=True)
def _no_terminal_settings(monkeypatch):
    """What a CI runner may set, removed: each test sets what it needs."""
    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


def _rows(run_id: str) -> list:
    """Rounds of a case with a spread (an interval), and a case failing with a long error."""
    ok = [
        row(
            run_id,
            0,
            round=r,
            tokens=1000,
            steps=1,
            energy_j=1.2345 + 0.1 * r,
            duration_s=1.0,
            method_by_domain={"cpu": "modelled-tdp", "ram": "modelled"},
            created_at="2026-01-01T00:00:00+00:00",
        )
        for r in range(4)
    ]
    failed = row(
        run_id,
        0,
        case_id="gpt/tiny/infer",
        phase="infer",
        status="failed",
        error=ERROR,
        created_at="2026-01-01T00:00:00+00:00",
    )
    return [*ok, failed]


def _store(tmp_path, runs=("20260101-000000-abcdef", "20260101-000001-fedcba")) -> str:
    db = tmp_path / "t.sqlite"
    with Store(db) as store:
        for run_id in runs:
            begin_run(store, run_id, label=LABEL)
            for r in _rows(run_id):
                store.add_row(r)
            store.end_run(run_id, "ok", "2026-01-01T00:01:00+00:00")
    return str(db)


def test_runs_prints_refs_and_run_ids_whole(tmp_path, capsys) -> None:
    assert main(["runs", "--db", _store(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(re.search(r"│ latest +│ 20260101-000001-fedcba", line) for line in lines)
    assert any(re.search(r"│ latest~1 +│ 20260101-000000-abcdef", line) for line in lines)
    assert any(LABEL.strip() in line for line in lines)  # at its width, not wrapped at 80
    assert "…" not in "".join(lines)


def test_run_table_keeps_an_interval_on_one_line(tmp_path, capsys) -> None:
    args = argparse.Namespace(json=False, db=tmp_path / "t.sqlite")
    console = make_console()
    _print_result(console, args, "r", "failed", _rows("r"), resolve(intensity=400.0))
    out = capsys.readouterr().out
    intervals = re.findall(r"[\d.]+ to [\d.]+", out)
    assert len(intervals) == 1, out
    assert ERROR.strip() in out and "…" not in out
    assert max(map(len, out.splitlines())) > 80  # the content's width, not rich's 80


def test_columns_is_honoured_and_only_free_text_wraps(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
    assert main(["runs", "--db", _store(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100
    assert not any(LABEL.strip() in line for line in lines)  # the label wrapped
    assert any(re.search(r"│ latest +│ 20260101-000001-fedcba", line) for line in lines)


def test_a_console_too_narrow_overflows_rather_than_cutting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["runs", "--db", _store(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "20260101-000001-fedcba" in out and "2026-01-01T00:00:00+00:00" in out
    assert re.search(r"│ latest~1 +│", out) and "…" not in out


def test_force_color_does_not_make_a_log_a_terminal(monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert make_console().width == UNLIMITED
    assert make_console(stderr=True).width == UNLIMITED
