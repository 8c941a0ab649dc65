"""Suite files and the results store."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from carbonbench.results.store import APPLICATION_ID, ResultRow, Store, StoreError
from carbonbench.suites.suite import SuiteError, load, narrow, parse
from tests.helpers import row

MINIMAL = """
[matrix]
arch = ["gpt", "lstm"]
phase = ["train", "generate"]
batch = [2]
seq_len = [8]
"""


def test_builtin_suites_load() -> None:
    smoke = load("smoke")
    archs = {c.arch for c in smoke.cases}
    assert archs == {"rnn", "lstm", "gru", "transformer", "seq2seq-lstm", "gpt"}
    for arch in archs:
        assert {"train", "infer"} <= {c.phase for c in smoke.cases if c.arch == arch}
    assert all(c.device == "cpu" and c.size == "tiny" for c in smoke.cases)
    gpu = load("gpu")
    assert {c.arch for c in gpu.cases} == archs and len(gpu.cases) == 14
    assert {(c.device, c.dtype, c.size) for c in gpu.cases} == {("cuda", "bfloat16", "small")}
    nightly = load("nightly")
    assert {c.dtype for c in nightly.cases} == {"bfloat16"}
    assert {"prefill", "decode", "train-to-target"} <= {c.phase for c in nightly.cases}


def test_matrix_expands_with_defaults_and_generate() -> None:
    suite = parse(MINIMAL, "mini.toml")
    assert suite.name == "mini"
    ids = [c.case_id for c in suite.cases]
    assert "gpt/tiny/fused/prefill/b2/s8/cpu/float32" in ids
    assert "gpt/tiny/fused/decode/b2/s8/cpu/float32" in ids
    assert len(ids) == 4  # gpt train, prefill, decode; lstm train
    assert any("lstm" in s and "key/value cache" in s for s in suite.skipped)
    assert [c.arch for c in narrow(suite, arch=["lstm"]).cases] == ["lstm"]
    assert len(narrow(suite, phase=["generate"]).cases) == 2
    with pytest.raises(SuiteError, match=r"--phase 'trian' matches no case of suite 'mini'; "):
        narrow(suite, phase=["train", "trian"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[matrix\narch=1", "mini.toml: not valid TOML"),
        ("[suite]\nname='x'", "mini.toml: the [matrix] table is missing"),
        (MINIMAL + "[measure]\nrepeat = 3\n", "unknown key [measure].repeat; valid keys:"),
        (MINIMAL + "[measure]\nrepeats = 'three'\n", "[measure].repeats must be an integer"),
        (
            MINIMAL.replace('"lstm"', '"mamba"'),
            "[matrix].arch: unknown architecture 'mamba'; valid: rnn",
        ),
        (MINIMAL.replace("[2]", "2"), "[matrix].batch must be a non-empty list of integers"),
        (MINIMAL.replace("seq_len = [8]", ""), "[matrix].seq_len is missing"),
        (MINIMAL + "[extras]\n", "unknown table [extras]"),
        (MINIMAL + "[measure]\nrepeats = 0\n", "[measure].repeats must be at least 1"),
        (MINIMAL + "[measure]\nrounds = 4\nmax_rounds = 3\n", "1 <= rounds <= max_rounds"),
        (MINIMAL + "[measure]\nmax_repeats = 9\n", "max_repeats is gone: rounds"),
    ],
)
def test_malformed_suite_names_file_key_and_form(text: str, message: str) -> None:
    with pytest.raises(SuiteError) as error:
        parse(text, "mini.toml")
    assert message in str(error.value)
    assert "\n" not in str(error.value).strip()


def test_unknown_suite_name() -> None:
    with pytest.raises(SuiteError, match="no suite named 'weekly'"):
        load("weekly")


def _row(run_id: str, repeat: int = 0) -> ResultRow:
    return row(
        run_id,
        repeat,
        case_id="gpt/x",
        batch=2,
        tokens=16,
        energy_j=1.5,
        energy_by_domain={"cpu:modelled": 1.5},
        method_by_domain={"cpu:modelled": "modelled"},
        reached_target=True,
    )


def _begin(store: Store, run_id: str) -> None:
    store.begin_run(
        run_id,
        label="<b>x</b>",
        suite_name="s",
        suite_source="s.toml",
        suite_text="",
        started_at="2026-01-01T00:00:00+00:00",
        metadata={"host": "h"},
    )


def test_store_round_trip_and_refs(tmp_path) -> None:
    with Store(tmp_path / "r.sqlite") as store:
        for run in ("run-a", "run-b", "run-c"):
            _begin(store, run)
            store.add_row(_row(run))
        store.end_run("run-c", "ok", "2026-01-01T01:00:00+00:00")
        assert store.resolve("latest") == "run-c"
        assert store.resolve("latest~2") == "run-a"
        assert store.resolve("run-b") == "run-b"
        with pytest.raises(StoreError, match="no run 'latest~3'"):
            store.resolve("latest~3")
        with pytest.raises(StoreError, match="3 runs match 'run-'"):
            store.resolve("run-")
        (row,) = store.rows("run-b")
        assert row.energy_by_domain == {"cpu:modelled": 1.5}
        assert row.reached_target is True and row.tokens == 16
        assert store.runs()[2].status == "ok"
    db = sqlite3.connect(tmp_path / "r.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_two_writers_on_one_file_both_land(tmp_path) -> None:
    path = tmp_path / "shared.sqlite"
    Store(path).close()
    errors: list[BaseException] = []

    def write(run_id: str) -> None:
        try:
            with Store(path) as store:
                _begin(store, run_id)
                for repeat in range(50):
                    store.add_row(_row(run_id, repeat))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Store(path) as store:
        assert len(store.rows("run-0")) == len(store.rows("run-1")) == 50


def test_corrupt_or_foreign_files_are_refused_and_untouched(tmp_path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just some bytes" * 100)
    before = junk.read_bytes()
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        Store(junk)
    assert junk.read_bytes() == before
    foreign = tmp_path / "other.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a carbonbench results store"):
        Store(foreign)
    assert foreign.read_bytes() == before
    with pytest.raises(StoreError, match="no results store at"):
        Store(tmp_path / "absent.sqlite", create=False)


def test_newer_schema_is_refused(tmp_path) -> None:
    path = tmp_path / "r.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer carbonbench"):
        Store(path)
