"""Bad input and faults against the command line: one line, the right exit status, nothing
half-written. One test per case found; property-based tests over suites and comparisons."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonbench.analysis.compare import CompareError, compare, side_from_benchmark_json
from carbonbench.cli import main
from carbonbench.results.store import Store, StoreError
from carbonbench.suites.suite import SuiteError, load, narrow, parse
from tests.helpers import begin_run, fast_suite, row


def _one_line_error(capsys, status: int, expected: int = 2) -> str:
    assert status == expected
    err = capsys.readouterr().err.strip()
    assert err.startswith("carbonbench: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def _store(tmp_path, runs=("a", "b"), **values) -> str:
    db = tmp_path / "h.sqlite"
    with Store(db) as store:
        for run_id in runs:
            begin_run(store, run_id)
            for r in range(3):
                store.add_row(
                    row(
                        run_id,
                        0,
                        round=r,
                        tokens=10,
                        steps=1,
                        energy_j=1.0 + r,
                        duration_s=1.0,
                        created_at="2026-01-01T00:00:00+00:00",
                        **values,
                    )
                )
            store.end_run(run_id, "ok", "2026-01-01T00:01:00+00:00")
    return str(db)


# -- output paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["export", "report", "markdown"])
@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path, capsys, command, where):
    db = _store(tmp_path)
    (tmp_path / "file").write_text("x")
    target = str(tmp_path) if where == "folder" else str(tmp_path / "file" / "out.txt")
    argv = {
        "export": ["export", "--db", db, "--format", "csv", "-o", target],
        "report": ["report", "--db", db, "-o", target],
        "markdown": ["compare", "a", "b", "--db", db, "--markdown", target],
    }[command]
    err = _one_line_error(capsys, main(argv))
    assert "cannot write the" in err
    assert ("is a folder" in err) if where == "folder" else ("is a file, not a folder" in err)


# -- comparison inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"benchmarks": "nope"}, "needs a list under"),
        ([1, 2], "needs a list under"),
        (None, "needs a list under"),
        ({"benchmarks": [{"fullname": "t", "extra_info": "x"}]}, "extra_info must be an object"),
        ({"benchmarks": [{"fullname": "t"}]}, "has neither energy"),
        ({"benchmarks": [3]}, "is not a benchmark"),
    ],
)
def test_json_not_shaped_like_pytest_benchmark_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(content))
    assert message in _one_line_error(capsys, main(["compare", str(path), str(path)]))


def test_a_missing_json_file_is_named(tmp_path, capsys) -> None:
    err = _one_line_error(capsys, main(["compare", "missing.json", "other.json"]))
    assert "no file missing.json" in err


def _benchmark_json(path, times=None, energy=None, intensity=475.0) -> str:
    bench = {"fullname": "tests/test_x.py::test_step", "stats": {"median": 0.01}}
    if times is not None:
        bench["stats"]["data"] = times
    if energy is not None:
        bench["extra_info"] = {
            "energy_j_per_round": energy,
            "duration_s_per_round": [1.0] * len(energy),
            "co2e_g_per_round": [e * intensity / 3.6e6 for e in energy],
            "units_per_round": 100,
            "carbon_intensity_g_per_kwh": intensity,
            "carbon_intensity_source": "x",
            "pue": 1.0,
        }
    path.write_text(json.dumps({"benchmarks": [bench], "machine_info": {"cpu": "CPU"}}))
    return str(path)


def test_plain_pytest_benchmark_files_are_compared_on_time(tmp_path, capsys) -> None:
    base = _benchmark_json(tmp_path / "a.json", times=[0.010, 0.011, 0.010, 0.0105, 0.0102])
    head = _benchmark_json(tmp_path / "b.json", times=[0.020, 0.021, 0.020, 0.0205, 0.0202])
    assert main(["compare", base, head, "--json"]) == 1  # twice as slow per call
    (verdict,) = json.loads(capsys.readouterr().out)["verdicts"]
    assert (verdict["metric"], verdict["verdict"]) == ("time_per_call", "regression")


def test_differing_carbon_settings_of_json_files_are_noted_and_co2e_left_out(tmp_path) -> None:
    energy = [10.0, 10.1, 9.9, 10.0, 10.05]
    a = side_from_benchmark_json(Path(_benchmark_json(tmp_path / "a.json", energy=energy)))
    b = side_from_benchmark_json(
        Path(_benchmark_json(tmp_path / "b.json", energy=energy, intensity=56.0))
    )
    result = compare(a, b)
    assert any("different carbon settings" in n and "left out" in n for n in result.notes)
    assert "co2e_per_1k_tokens" not in {v.metric for v in result.verdicts}
    assert result.passed


def test_a_comparison_with_nothing_in_common_is_exit_2(tmp_path, capsys) -> None:
    db = _store(tmp_path, runs=("a",))
    with Store(db) as store:
        begin_run(store, "b")
        store.add_row(row("b", 0, case_id="other", tokens=10, steps=1, energy_j=1.0))
    err = _one_line_error(capsys, main(["compare", "a", "b", "--db", db]))
    assert "nothing to compare" in err


def test_comparing_a_run_with_itself_says_so(tmp_path, capsys) -> None:
    db = _store(tmp_path)
    assert main(["compare", "latest", "latest", "--db", db]) == 0
    assert "the same run" in capsys.readouterr().out


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--pue", "nan"],
        ["run", "--carbon-intensity", "inf"],
        ["estimate", "--power", "300", "--hours", "nan"],
        ["sensors", "--seconds", "nan"],
    ],
)
def test_non_finite_numbers_are_refused(argv, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "must be a finite number" in capsys.readouterr().err


# -- exports --------------------------------------------------------------------------------


def test_parquet_exports_of_different_nights_read_as_one_dataset(tmp_path) -> None:
    db_a = _store(tmp_path / "a")  # no loss, no error, no params: all null in this run
    db_b = _store(tmp_path / "b", loss=2.5, error=None, params=1000)
    for db, out in ((db_a, "a.parquet"), (db_b, "b.parquet")):
        assert main(["export", "--db", db, "--format", "parquet", "-o", str(tmp_path / out)]) == 0
    table = ds.dataset([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]).to_table()
    assert table.num_rows == 12
    assert str(table.schema.field("loss").type) == "double"
    assert str(table.schema.field("params").type) == "int64"
    assert str(table.schema.field("created_at").type).startswith("timestamp")
    assert table.schema.names[:3] == ["run_id", "case_id", "repeat"]


def test_json_export_is_strict(tmp_path, capsys) -> None:
    db = _store(tmp_path, loss=math.nan)
    assert main(["export", "--db", db, "--format", "json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text and json.loads(text)[0]["loss"] is None


def test_export_of_an_empty_store_keeps_the_schema(tmp_path, capsys) -> None:
    db = tmp_path / "empty.sqlite"
    Store(db).close()
    assert main(["export", "--db", str(db), "--format", "csv"]) == 0
    header = capsys.readouterr().out.strip()
    assert header.startswith("run_id,case_id,repeat,") and "round" in header.split(",")


def test_runs_shows_whole_run_ids(tmp_path, capsys) -> None:
    db = _store(tmp_path, runs=("20261129T193413Z-8dbfdc", "20261129T193413Z-0a1b2c"))
    assert main(["runs", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "20261129T193413Z-8dbfdc" in out and "20261129T193413Z-0a1b2c" in out


# -- suites ---------------------------------------------------------------------------------


def test_suite_values_are_checked_before_anything_runs(tmp_path, capsys) -> None:
    text = fast_suite().text
    with pytest.raises(SuiteError, match="'tpu', which torch does not know"):
        parse(text.replace('device = ["cpu"]', 'device = ["tpu"]'), "s.toml")
    with pytest.raises(SuiteError, match=r"s.toml \[thresholds\]: unknown metric 'joules'"):
        parse(text + "\n[thresholds]\njoules = 0.1\n", "s.toml")
    with pytest.raises(SuiteError, match="energy_per_token must be a fraction"):
        parse(text + "\n[thresholds]\nenergy_per_token = 'high'\n", "s.toml")
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(text)
    db = str(tmp_path / "never.sqlite")
    for corpus, message in (("absent.txt", "cannot read corpus"), ("empty.txt", "too short")):
        (tmp_path / "empty.txt").write_text("")
        argv = ["run", "--suite", str(suite_file), "--db", db, "--corpus", str(tmp_path / corpus)]
        assert message in _one_line_error(capsys, main(argv))
    (tmp_path / "short.txt").write_text("abc")
    argv = ["run", "--suite", str(suite_file), "--db", db, "--corpus", str(tmp_path / "short.txt")]
    assert "fewer than one sequence of 9" in _one_line_error(capsys, main(argv))
    assert not (tmp_path / "never.sqlite").exists()  # nothing stored for a refused run


def test_a_suite_with_no_runnable_combination_says_why(tmp_path, capsys) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(fast_suite(archs=("lstm",), phases=("generate",)).text)
    err = _one_line_error(capsys, main(["run", "--suite", str(suite_file)]))
    assert "has no case that can run" in err and "key/value cache" in err


def test_a_non_utf8_suite_names_its_file(tmp_path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(fast_suite().text.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(SuiteError, match=r"latin1.toml: not UTF-8 text"):
        load(str(path))


def test_the_phase_filter_error_lists_generate() -> None:
    with pytest.raises(
        SuiteError, match="its phase values: train, infer, prefill, decode, generate"
    ):
        narrow(load("smoke"), phase=["trian"])


# -- the store ------------------------------------------------------------------------------


def test_a_folder_given_as_the_store_is_one_line(tmp_path, capsys) -> None:
    err = _one_line_error(capsys, main(["runs", "--db", str(tmp_path)]))
    assert "is a folder, not a results store" in err


def test_read_only_commands_leave_the_store_as_it_is(tmp_path, capsys) -> None:
    db = _store(tmp_path)
    before = hashlib.sha256(Path(db).read_bytes()).hexdigest()
    assert main(["runs", "--db", db, "--json"]) == 0
    assert main(["export", "--db", db, "--format", "json"]) == 0
    with Store(db, create=False, readonly=True) as store:
        assert [r.run_id for r in store.runs()] == ["a", "b"]
        with pytest.raises(StoreError, match="cannot be written"):
            store.end_run("a", "failed", "now")
    assert hashlib.sha256(Path(db).read_bytes()).hexdigest() == before


def test_a_damaged_store_is_refused_before_a_run_writes_to_it(tmp_path, capsys) -> None:
    db = tmp_path / "damaged.sqlite"
    with Store(db) as store:
        begin_run(store, "a", suite_text="x" * 20000)  # spills over several pages
        for r in range(200):
            store.add_row(row("a", r, tokens=10, energy_j=1.0))
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    data[3 * page : 3 * page + 64] = b"\xff" * 64  # garbage inside a b-tree page
    db.write_bytes(bytes(data))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(fast_suite().text)
    err = _one_line_error(capsys, main(["run", "--suite", str(suite_file), "--db", str(db)]))
    assert "damaged" in err and "left untouched" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_full_disk_is_named() -> None:
    import sqlite3

    store = object.__new__(Store)
    store.path = Path("/archive/results.sqlite")
    message = store._explain(sqlite3.OperationalError("database or disk is full"))
    assert "disk holding /archive/results.sqlite is full" in message and "--resume" in message


# -- internal errors ------------------------------------------------------------------------


def test_an_internal_error_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    from carbonbench.cli import runs

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runs, "handle", broken)
    err = _one_line_error(capsys, main(["runs"]))
    assert "internal error: RuntimeError: a bug" in err and "--debug" in err
    assert main(["--debug", "runs"]) == 2
    assert "Traceback" in capsys.readouterr().err


# -- properties -----------------------------------------------------------------------------

MATRIX_VALUES = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-2, 64), st.text(max_size=6)), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["arch", "size", "impl", "phase", "batch", "seq_len", "device", "dtype"]),
        MATRIX_VALUES,
        max_size=8,
    ),
    st.dictionaries(
        st.sampled_from(["repeats", "rounds", "max_rounds", "min_window_s", "warmup_steps"]),
        st.one_of(st.integers(-2, 12), st.floats(allow_nan=True), st.text(max_size=3)),
        max_size=4,
    ),
)
def test_any_suite_parses_or_is_one_suite_error(matrix, measure) -> None:
    lines = ["[matrix]"]
    for key, value in matrix.items():
        if value is not None:
            lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[measure]")
    for key, value in measure.items():
        lines.append(
            f"{key} = {json.dumps(value) if not isinstance(value, float) else repr(value)}"
        )
    text = "\n".join(lines).replace("NaN", "nan").replace("Infinity", "inf")
    try:
        parse(text, "gen.toml")
    except SuiteError as error:
        assert str(error).startswith("gen.toml") and "\n" not in str(error)


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_any_json_compares_or_is_a_compare_error(tmp_path_factory, content) -> None:
    path = tmp_path_factory.mktemp("j") / "gen.json"
    path.write_text(json.dumps({"benchmarks": [content]} if content else content))
    try:
        side = side_from_benchmark_json(path)
        compare(side, side)
    except CompareError as error:
        assert "\n" not in str(error)
