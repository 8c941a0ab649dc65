"""Stores written by earlier carbonbench versions (tests/fixtures/stores/README.md), opened by
today's: migrated with every row and run intact, and listed, exported, reported, compared and
added to by the command line. Each test works on a copy: the fixtures never change."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from carbonbench.cli import main
from carbonbench.results.store import JSON_COLUMNS, MIGRATIONS, SCHEMA_VERSION, ResultRow, Store
from tests.helpers import fast_suite

FIXTURES = Path(__file__).parent / "fixtures" / "stores"
STORES = sorted(FIXTURES.glob("schema-*.sqlite"))


def _version(path: Path) -> int:
    return int(path.stem.removeprefix("schema-"))


def _connect_ro(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def _raw(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every run and every row as SQLite holds them, read without carbonbench."""
    with _connect_ro(path) as db:
        runs = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY seq")]
        rows = [dict(r) for r in db.execute("SELECT * FROM results ORDER BY id")]
    db.close()
    return runs, rows


def _schema(db: sqlite3.Connection) -> dict[str, Any]:
    """Tables with their columns (name, type, not null, default, primary key) and indexes."""
    out: dict[str, Any] = {}
    names = "SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    for name, kind in db.execute(names).fetchall():
        if kind == "table":
            info = db.execute(f"PRAGMA table_info({name})").fetchall()
            out[name] = [tuple(c)[1:] for c in info]
        elif kind == "index":
            out[name] = [tuple(c) for c in db.execute(f"PRAGMA index_info({name})").fetchall()]
    return out


def _migrated_to(version: int) -> sqlite3.Connection:
    """An empty database given migrations 1..version, as Store._migrate runs them."""
    db = sqlite3.connect(":memory:")
    for migration in MIGRATIONS[:version]:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)
    return db


@pytest.fixture(params=STORES, ids=lambda p: p.stem)
def old(request, tmp_path) -> Path:
    """A copy of one committed store."""
    copy = tmp_path / request.param.name
    shutil.copyfile(request.param, copy)
    return copy


def test_every_schema_has_a_fixture() -> None:
    """Every schema below the current one: written by the last version of that schema. The
    current schema needs none yet, since its only writer is the code under test; whoever
    appends a migration adds the fixture of the schema it supersedes."""
    versions = [_version(p) for p in STORES]
    assert versions[: SCHEMA_VERSION - 1] == list(range(1, SCHEMA_VERSION))
    assert set(versions) <= set(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("path", STORES, ids=lambda p: p.stem)
def test_the_migrations_make_what_the_old_versions_made(path: Path) -> None:
    """Migrations 1..N today create, column for column, what version N's code wrote: a
    migration edited after it shipped (or built from live code) fails here."""
    with _connect_ro(path) as written:
        assert written.execute("PRAGMA user_version").fetchone()[0] == _version(path)
        expected = _schema(written)
    written.close()
    assert _schema(_migrated_to(_version(path))) == expected


def test_a_fresh_store_has_the_schema_a_migrated_one_has(tmp_path) -> None:
    shutil.copyfile(FIXTURES / "schema-1.sqlite", tmp_path / "old.sqlite")
    Store(tmp_path / "old.sqlite").close()
    Store(tmp_path / "new.sqlite").close()
    schemas = []
    for name in ("old.sqlite", "new.sqlite"):
        with _connect_ro(tmp_path / name) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            schemas.append(_schema(db))
        db.close()
    assert schemas[0] == schemas[1]
    assert set(schemas[0]) == {"runs", "results", "results_run", "flop_counts"}


def test_every_result_field_has_a_column() -> None:
    """A field added to ResultRow needs a migration that adds its column."""
    columns = {c[0] for c in _schema(_migrated_to(SCHEMA_VERSION))["results"]}
    assert {f for f in ResultRow.__dataclass_fields__} <= columns


def test_opening_migrates_and_keeps_every_run_and_row(old: Path) -> None:
    runs, rows = _raw(old)
    assert runs and rows
    with Store(old) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        records = store.runs()
        stored = store.rows()
    after_runs, after_rows = _raw(old)
    assert after_runs == runs
    assert [r["id"] for r in after_rows] == [r["id"] for r in rows]
    for before, after in zip(rows, after_rows, strict=True):
        assert after | before == after  # every old column keeps its value
        assert after["round"] == before.get("round", 0)
    assert [r.run_id for r in records] == [r["run_id"] for r in runs]
    assert [r.status for r in records] == [r["status"] for r in runs]
    assert [r.label for r in records] == [r["label"] for r in runs]
    for row, raw in zip(stored, rows, strict=True):
        for key, value in raw.items():
            if key == "id":
                continue
            if key in JSON_COLUMNS and value is not None:
                value = json.loads(value)
            if key == "reached_target" and value is not None:
                value = bool(value)
            assert getattr(row, key) == value, key


def test_the_command_line_lists_exports_reports_and_compares_it(old: Path, capsys) -> None:
    runs, rows = _raw(old)
    ids = [r["run_id"] for r in runs]
    db = str(old)
    assert main(["runs", "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == ids
    counts = {i: sum(r["run_id"] == i for r in rows) for i in ids}
    assert {r["run_id"]: r["rows"] for r in listed} == counts

    out = old.parent
    for fmt in ("csv", "json", "parquet"):
        assert main(["export", "--db", db, "--format", fmt, "-o", str(out / f"x.{fmt}")]) == 0
    with open(out / "x.csv", newline="") as f:
        assert [r["case_id"] for r in csv.DictReader(f)] == [r["case_id"] for r in rows]
    exported = json.loads((out / "x.json").read_text())
    assert [(r["run_id"], r["case_id"]) for r in exported] == [
        (r["run_id"], r["case_id"]) for r in rows
    ]
    assert pq.read_table(out / "x.parquet").num_rows == len(rows)

    report = out / "x.html"
    assert main(["report", "--db", db, "--last", str(len(ids)), "-o", str(report)]) == 0
    assert all(i in report.read_text() for i in ids)

    baseline, current = [r["run_id"] for r in runs if r["label"] == "fixture"]
    capsys.readouterr()
    assert main(["compare", baseline, current, "--db", db, "--json"]) in (0, 1)
    result = json.loads(capsys.readouterr().out)
    assert (result["baseline"], result["current"]) == (baseline, current)
    assert {v["case_id"].split("/")[0] for v in result["verdicts"]} == {"rnn"}  # in both runs


@pytest.mark.slow
def test_a_new_run_is_added_and_the_old_rows_stay(old: Path, tmp_path, capsys) -> None:
    runs, rows = _raw(old)
    text = fast_suite(phases=("infer",)).text.replace(
        "idle_baseline_s = 0.1", "idle_baseline_s = 0"
    )
    assert "idle_baseline_s = 0\n" in text
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(text)
    assert main(["run", "--suite", str(suite_file), "--db", str(old), "--json"]) == 0
    after_runs, after_rows = _raw(old)
    assert after_runs[: len(runs)] == runs and len(after_runs) == len(runs) + 1
    new = after_runs[-1]
    assert new["status"] == "ok" and new["seq"] == runs[-1]["seq"] + 1
    for before, after in zip(rows, after_rows, strict=False):
        assert after | before == after
    added = after_rows[len(rows) :]
    assert added and all(r["run_id"] == new["run_id"] and r["status"] == "ok" for r in added)
    capsys.readouterr()
    assert main(["runs", "--db", str(old), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [r["run_id"] for r in after_runs]
