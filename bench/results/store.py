"""The results store: one SQLite file holding every run, night after night.

WAL mode and one transaction per row, so a reader (the report) never blocks the suite, two runs
may write one file at once, and an interrupted run keeps every row it finished. The file is
marked with an application id; a file that is not a carbonbench store, or is damaged, is
refused with a clear message and left untouched. The schema is versioned (``user_version``)
and migrated on open by ``MIGRATIONS``, literal SQL frozen as each version shipped: never edit a
migration, append a new one (a store written years ago must still mean what it meant).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.hardware import Hardware
from carbonbench.errors import CarbonbenchError
from carbonbench.results.metadata import MetadataError, RunMetadata
from carbonbench.suites.case import Case

log = logging.getLogger(__name__)

DEFAULT_DB = Path("carbonbench-results/results.sqlite")
APPLICATION_ID = 0x43424E43  # "CBNC"


class StoreError(CarbonbenchError):
    """The store cannot be used: one line saying why and what to do."""


@dataclass
class ResultRow:
    """One measured window of one case (or a case's failure): the unit of the results table.

    Identity (the case's fields, see ``carbonbench.suites.case``), work, time, energy per domain
    with its method, carbon with its inputs, and status."""

    run_id: str
    case_id: str
    repeat: int
    arch: str
    size: str
    impl: str
    phase: str
    device: str
    dtype: str
    batch: int
    seq_len: int
    threads: int | None = None  # the case's settings (carbonbench.suites.case.KNOBS)
    power_limit_w: int | None = None
    sm_clock_mhz: int | None = None
    concurrency: int | None = None  # a serving level's (carbonbench serving)
    rate: float | None = None
    round: int = 0  # the worker process (0..R-1) that measured it: the unit of repetition
    status: str = "ok"  # ok | failed
    error: str | None = None
    params: int | None = None
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    src_tokens: int = 0
    flops: int | None = 0  # None: unknown (the counter could not see the arithmetic), never 0
    flops_method: str | None = None
    duration_s: float = 0.0
    energy_j: float = 0.0  # sum over the domains that add up
    energy_by_domain: dict[str, float] = field(default_factory=dict)
    method_by_domain: dict[str, str] = field(default_factory=dict)
    additive_by_domain: dict[str, bool] = field(default_factory=dict)  # False: overlaps others
    idle_w: dict[str, float] | None = None
    dynamic_energy_j: float | None = None
    loss: float | None = None
    target_loss: float | None = None
    reached_target: bool | None = None
    kwh: float = 0.0
    pue: float = 1.0
    intensity_g_per_kwh: float = 0.0
    intensity_source: str = ""
    intensity_year: int | None = None
    intensity_region: str | None = None
    co2e_g: float = 0.0
    peak_memory_bytes: int | None = None
    world_size: int = 1
    timeline: dict[str, Any] = field(default_factory=dict)  # t and watts per domain, downsampled
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @property
    def case(self) -> Case:
        return Case.of(self)

    @property
    def ok(self) -> bool:
        """A window that measured something (a failed case's row measured nothing)."""
        return self.status == "ok" and self.duration_s > 0

    def to_dict(self, *, json_text: bool = False) -> dict[str, Any]:
        """The row as plain data; ``json_text``: the nested columns as JSON text, as in CSV."""
        record = asdict(self)
        if json_text:
            for key in JSON_COLUMNS:
                record[key] = json.dumps(record[key])
        return record


@dataclass
class RunRecord:
    """One run: what was measured (suite, label), when, its status, and its metadata (host,
    hardware, versions, sensors and their constants, carbon settings, options)."""

    run_id: str
    seq: int  # order in the store: latest~N counts back along it
    label: str | None
    suite_name: str
    suite_source: str
    suite_text: str
    status: str  # running | ok | failed | interrupted
    started_at: str
    ended_at: str | None
    metadata: RunMetadata

    @property
    def carbon(self) -> CarbonSettings | None:
        return self.metadata.carbon_settings

    @property
    def hardware(self) -> Hardware:
        return self.metadata.hardware


JSON_COLUMNS = {
    "energy_by_domain",
    "method_by_domain",
    "additive_by_domain",
    "idle_w",
    "timeline",
    "extra",
}
# The schema's history, one entry per version (``user_version`` N has run MIGRATIONS[:N]).
# Rule: never edit a migration, append a new one. Each is literal SQL, frozen as it shipped:
# stores written by every earlier version are opened by this code (tests/test_migrations.py
# opens the committed ones), and a migration built from live code (say, ResultRow's fields)
# would silently change what an old version number means. A field added to ResultRow needs
# its own ``ALTER TABLE results ADD COLUMN`` here; statements are split on ";".
MIGRATIONS: list[str] = [
    # 1: runs and results
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        label TEXT,
        suite_name TEXT,
        suite_source TEXT,
        suite_text TEXT,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        metadata TEXT NOT NULL
    );
    CREATE TABLE results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT,
        case_id TEXT,
        repeat INTEGER,
        arch TEXT,
        size TEXT,
        impl TEXT,
        phase TEXT,
        device TEXT,
        dtype TEXT,
        batch INTEGER,
        seq_len INTEGER,
        status TEXT,
        error TEXT,
        params INTEGER,
        steps INTEGER,
        samples INTEGER,
        tokens INTEGER,
        src_tokens INTEGER,
        flops INTEGER,
        flops_method TEXT,
        duration_s REAL,
        energy_j REAL,
        energy_by_domain TEXT,
        method_by_domain TEXT,
        additive_by_domain TEXT,
        idle_w TEXT,
        dynamic_energy_j REAL,
        loss REAL,
        target_loss REAL,
        reached_target INTEGER,
        kwh REAL,
        pue REAL,
        intensity_g_per_kwh REAL,
        intensity_source TEXT,
        intensity_year INTEGER,
        intensity_region TEXT,
        co2e_g REAL,
        peak_memory_bytes INTEGER,
        world_size INTEGER,
        timeline TEXT,
        extra TEXT,
        created_at TEXT,
        FOREIGN KEY (run_id) REFERENCES runs(run_id)
    );
    CREATE INDEX results_run ON results(run_id, case_id);
    """,
    # 2: rows carry the round (worker process) that measured them
    "ALTER TABLE results ADD COLUMN round INTEGER NOT NULL DEFAULT 0",
    # 3: FLOP counts by what determines them (carbonbench.models.flops.count_key), for later runs
    """
    CREATE TABLE flop_counts (
        key TEXT PRIMARY KEY,
        counts TEXT NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    # 4: the settings a suite can sweep (carbonbench.suites.case.KNOBS beyond the shape)
    """
    ALTER TABLE results ADD COLUMN threads INTEGER;
    ALTER TABLE results ADD COLUMN power_limit_w INTEGER;
    ALTER TABLE results ADD COLUMN sm_clock_mhz INTEGER
    """,
    # 5: a serving level's load (carbonbench serving): requests in flight, or arrivals per s
    """
    ALTER TABLE results ADD COLUMN concurrency INTEGER;
    ALTER TABLE results ADD COLUMN rate REAL
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    def __init__(
        self,
        path: str | Path = DEFAULT_DB,
        *,
        create: bool = True,
        readonly: bool = False,
        check: bool = False,
    ) -> None:
        """``readonly``: for commands that only read (an archived store in a read-only place
        opens too; nothing is migrated or written). ``check``: verify every page before a run
        writes to it, so a damaged store is refused untouched."""
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(
                f"{self.path} is a folder, not a results store: give a file path, such as "
                f"{self.path / 'results.sqlite'}"
            )
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists and (not create or readonly):
            raise StoreError(
                f"no results store at {self.path}: run `carbonbench run` first, or give --db"
            )
        if not exists:
            self._prepare_folder()
        try:
            if readonly:
                self.db = self._connect_readonly()
            else:
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if exists:
                self._check_ours()
                if check:
                    self._check_pages()
            if not readonly:
                self._migrate()
        except sqlite3.OperationalError as error:
            raise StoreError(self._explain(error)) from None
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path} is not a readable SQLite database ({error}); it was left "
                "untouched: give another --db, or move the file away"
            ) from None
        if log.isEnabledFor(logging.DEBUG):
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            mode = "read-only" if readonly else "read-write"
            log.debug("store %s opened %s at schema %d", self.path, mode, version)

    def _prepare_folder(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create a results store at {self.path}: {error.strerror} "
                f"({folder}); give a --db in a folder you can write"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot create a results store at {self.path}: no permission to write in "
                f"{folder}; give a --db in a folder you can write"
            )

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # a WAL store in a folder nobody may write (an archive): read it as it is on disk
            db.close()
            db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
        return db

    def _check_pages(self) -> None:
        problems = [r[0] for r in self.db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            self.db.close()
            lines = [x for x in "\n".join(problems).splitlines() if x and not x.startswith("***")]
            raise StoreError(
                f"{self.path} is damaged ({lines[0] if lines else 'quick_check failed'}); it was "
                "left untouched: give another --db, or recover it (sqlite3 FILE .recover)"
            )

    def _explain(self, error: sqlite3.OperationalError) -> str:
        """The precise reason for an operational failure, with its fix."""
        text = str(error)
        if "full" in text:
            return (
                f"the disk holding {self.path} is full ({text}); rows finished before this are "
                "kept: free space, then `carbonbench run --resume latest`"
            )
        if "readonly" in text or "read-only" in text:
            return (
                f"{self.path} cannot be written ({text}): give a --db you can write (reading "
                "commands open it read-only)"
            )
        if "unable to open" in text or "locked" in text:
            return f"cannot open the results store {self.path} ({text})"
        return f"results store {self.path}: {text}"

    def _check_ours(self) -> None:
        app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            self.db.close()
            raise StoreError(
                f"{self.path} is an SQLite file but not a carbonbench results store; it was "
                "left untouched: give another --db"
            )
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self.db.close()
            raise StoreError(
                f"{self.path} was written by a newer carbonbench (schema {version} > "
                f"{SCHEMA_VERSION}): upgrade carbonbench to read it"
            )

    def _migrate(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with self._transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]  # under the lock
            for number in range(version, SCHEMA_VERSION):  # executescript would commit
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
            self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if version == 0:
            log.info("store %s created at schema %d", self.path, SCHEMA_VERSION)
        else:
            log.info("store %s migrated from schema %d to %d", self.path, version, SCHEMA_VERSION)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise StoreError(self._explain(error)) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------

    def begin_run(
        self,
        run_id: str,
        *,
        label: str | None,
        suite_name: str,
        suite_source: str,
        suite_text: str,
        started_at: str,
        metadata: dict[str, Any],
    ) -> None:
        with self._transaction():
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            self.db.execute(
                "INSERT INTO runs (run_id, seq, label, suite_name, suite_source, suite_text, "
                "status, started_at, metadata) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    run_id,
                    seq,
                    label,
                    suite_name,
                    suite_source,
                    suite_text,
                    started_at,
                    json.dumps(metadata, default=str),
                ),
            )

    def reopen_run(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Mark a stopped run as running again: ``carbonbench run --resume``."""
        with self._transaction():
            self.db.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, metadata = ? "
                "WHERE run_id = ?",
                (json.dumps(metadata, default=str), run_id),
            )

    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Replace a run's metadata (what its first worker learnt of the hardware, say)."""
        with self._transaction():
            self.db.execute(
                "UPDATE runs SET metadata = ? WHERE run_id = ?",
                (json.dumps(metadata, default=str), run_id),
            )

    def end_run(self, run_id: str, status: str, ended_at: str, metadata: dict | None = None):
        with self._transaction():
            self.db.execute(
                "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                (status, ended_at, run_id),
            )
            if metadata is not None:
                self.db.execute(
                    "UPDATE runs SET metadata = ? WHERE run_id = ?",
                    (json.dumps(metadata, default=str), run_id),
                )

    def add_row(self, row: ResultRow) -> None:
        record = asdict(row)
        for key in JSON_COLUMNS:
            record[key] = json.dumps(record[key])
        columns = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        with self._transaction():
            self.db.execute(
                f"INSERT INTO results ({columns}) VALUES ({marks})", list(record.values())
            )

    def flop_counts(self) -> dict[str, list[int]]:
        """Every FLOP count kept, by its key (opaque here: ``carbonbench.models.flops`` makes
        and reads them), so that a run counts only what no earlier run has."""
        query = "SELECT key, counts FROM flop_counts"
        return {key: json.loads(counts) for key, counts in self.db.execute(query)}

    def add_flop_counts(self, counts: dict[str, list[int]]) -> None:
        """Keep new counts, in one transaction; a key already kept keeps its first counts (the
        same, since the key holds everything that determines them)."""
        if not counts:
            return
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO flop_counts (key, counts, created_at) VALUES (?, ?, ?)",
                [(key, json.dumps(value), created_at) for key, value in counts.items()],
            )

    def set_metadata_field(self, run_id: str, key: str, value: Any) -> None:
        """Set one top-level field of a run's metadata in one statement (no read-modify-write
        that could lose what another process wrote meanwhile)."""
        with self._transaction():
            self.db.execute(
                "UPDATE runs SET metadata = json_set(metadata, ?, json(?)) WHERE run_id = ?",
                (f"$.{key}", json.dumps(value, default=str), run_id),
            )

    def _run_record(self, row: sqlite3.Row) -> RunRecord:
        try:
            metadata = RunMetadata.from_dict(json.loads(row["metadata"]), f"run {row['run_id']}")
        except (ValueError, MetadataError) as error:
            raise StoreError(f"{self.path}: {error}") from None
        return RunRecord(**{**dict(row), "metadata": metadata})

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        rows = self.db.execute("SELECT * FROM runs ORDER BY seq").fetchall()
        return [self._run_record(r) for r in rows]

    def run(self, run_id: str) -> RunRecord:
        """One run's record, by its exact id (``resolve`` turns a reference into one)."""
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        return self._run_record(row)

    def row_counts(self) -> dict[str, int]:
        """Rows stored per run id."""
        query = "SELECT run_id, COUNT(*) FROM results GROUP BY run_id"
        return {run_id: n for run_id, n in self.db.execute(query)}

    def resolve(self, ref: str) -> str:
        """A run id from an id (or unique prefix), ``latest`` or ``latest~N``."""
        match = re.fullmatch(r"latest(?:~(\d+))?", ref)
        if match:
            back = int(match[1] or 0)
            row = self.db.execute(
                "SELECT run_id FROM runs ORDER BY seq DESC LIMIT 1 OFFSET ?", (back,)
            ).fetchone()
            if row is None:
                count = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                raise StoreError(f"no run {ref!r} in {self.path}: it holds {count} run(s)")
            return row[0]
        rows = self.db.execute(
            "SELECT run_id FROM runs WHERE run_id LIKE ? || '%'", (ref,)
        ).fetchall()
        if len(rows) != 1:
            why = "no run" if not rows else f"{len(rows)} runs match"
            raise StoreError(
                f"{why} {ref!r} in {self.path}; use a run id, latest or latest~N "
                "(carbonbench runs lists them)"
            )
        return rows[0][0]

    def rows(self, run_id: str | None = None) -> list[ResultRow]:
        """The rows of one run (default: every run), in the order they were written."""
        query = "SELECT * FROM results"
        args: tuple = ()
        if run_id is not None:
            query, args = query + " WHERE run_id = ?", (run_id,)
        out = []
        for r in self.db.execute(query + " ORDER BY id", args):
            record = dict(r)
            record.pop("id")
            for key in JSON_COLUMNS:
                record[key] = json.loads(record[key]) if record[key] is not None else None
            if record["reached_target"] is not None:
                record["reached_target"] = bool(record["reached_target"])
            out.append(ResultRow(**record))
        return out
