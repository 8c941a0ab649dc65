"""The ``carbonbench`` logger: its level from -v/-vv or CARBONBENCH_LOG, its lines on stderr."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from carbonbench import logs
from carbonbench.cli import main
from carbonbench.errors import InputError
from carbonbench.results.store import SCHEMA_VERSION, Store
from tests.helpers import begin_run, row

LOGGER = logging.getLogger("carbonbench")
FIXTURES = Path(__file__).parent / "fixtures" / "stores"


def _store(tmp_path: Path) -> str:
    db = tmp_path / "l.sqlite"
    with Store(db) as store:
        begin_run(store, "a")
        store.add_row(row("a", tokens=10, steps=1, duration_s=1.0, energy_j=1.0))
    return str(db)


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    """No level or handler leaks into other tests; CARBONBENCH_LOG is restored (setenv first:
    delenv of an unset variable records nothing to undo, and configure sets it)."""
    monkeypatch.setenv(logs.ENV, "")
    monkeypatch.delenv(logs.ENV)
    yield
    for handler in [h for h in LOGGER.handlers if isinstance(h, logs._StderrHandler)]:
        LOGGER.removeHandler(handler)
    LOGGER.setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("verbosity", "env", "expected"),
    [
        (0, None, logging.WARNING),
        (1, None, logging.INFO),
        (2, None, logging.DEBUG),
        (3, None, logging.DEBUG),
        (0, "debug", logging.DEBUG),
        (0, "INFO", logging.INFO),
        (0, " error ", logging.ERROR),
        (0, "", logging.WARNING),
        (1, "error", logging.INFO),  # the flag wins
    ],
)
def test_the_flag_and_the_environment_set_the_level(
    monkeypatch, verbosity: int, env: str | None, expected: int
) -> None:
    if env is not None:
        monkeypatch.setenv(logs.ENV, env)
    logs.configure(verbosity)
    assert LOGGER.level == expected
    assert sum(isinstance(h, logs._StderrHandler) for h in LOGGER.handlers) == 1


def test_a_level_given_by_flag_is_passed_on_to_workers() -> None:
    logs.configure(2)
    assert os.environ[logs.ENV] == "debug"
    logs.configure(0)  # what a worker does: the supervisor's level
    assert LOGGER.level == logging.DEBUG


def test_configuring_again_replaces_the_handler() -> None:
    logs.configure(1)
    logs.configure(1)
    assert sum(isinstance(h, logs._StderrHandler) for h in LOGGER.handlers) == 1


def test_an_unknown_level_name_is_refused(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv(logs.ENV, "loud")
    with pytest.raises(InputError, match="CARBONBENCH_LOG='loud' is not a log level"):
        logs.configure(0)
    assert main(["runs", "--db", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("carbonbench: error: CARBONBENCH_LOG='loud'") and "\n" not in err


def test_dash_v_prints_info_lines_on_stderr(tmp_path, capsys) -> None:
    db = _store(tmp_path)
    assert main(["-v", "runs", "--db", db]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert any(" INFO carbonbench.cli: carbonbench " in line and ": runs" in line for line in lines)
    assert not any(" DEBUG " in line for line in lines)
    assert "INFO" not in captured.out  # the table stays clean


def test_dash_vv_adds_the_arguments_and_the_store(tmp_path, capsys) -> None:
    db = _store(tmp_path)
    assert main(["-vv", "runs", "--db", db]) == 0
    err = capsys.readouterr().err
    assert "DEBUG carbonbench.cli: command runs with" in err
    assert "DEBUG carbonbench.results.store: store " in err and "read-only at schema" in err


def test_a_migration_is_logged(tmp_path, capsys) -> None:
    shutil.copyfile(FIXTURES / "schema-1.sqlite", tmp_path / "old.sqlite")
    logs.configure(1)
    Store(tmp_path / "old.sqlite").close()
    err = capsys.readouterr().err
    assert f"migrated from schema 1 to {SCHEMA_VERSION}" in err


def test_without_a_flag_nothing_below_warning_is_printed(tmp_path, capsys) -> None:
    db = _store(tmp_path)
    assert main(["runs", "--db", db]) == 0
    assert capsys.readouterr().err == ""
