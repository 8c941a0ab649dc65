"""The one writer of a run's record: begun (or reopened), completed, ended.

Whoever measures (the supervisor of ``carbonbench run``, the in-process runner of a
distributed rank, ``track()`` and ``measure``) owns its run through a ``RunLog``: it writes the
run's row in ``runs`` and its typed metadata, the failed rows of cases whose worker died, and
the status it ends with. Rows of measured windows are written by the process that measured
them (``carbonbench.results.recorder``), one transaction each. Nothing else writes a run's
record; ``ab`` tags its runs with ``tag``, one field set atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.results.metadata import AbTag, Process, RunMetadata
from carbonbench.results.recorder import Recorder, now
from carbonbench.results.store import ResultRow, Store
from carbonbench.suites.case import Case
from carbonbench.suites.suite import Suite

log = logging.getLogger(__name__)
STATUSES = ("running", "ok", "failed", "interrupted")


def new_run_id() -> str:
    """A run's id: when it began (UTC, so ids sort by time) and six random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


class RunLog:
    def __init__(
        self, store: Store, run_id: str, metadata: RunMetadata, *, reopened: bool = False
    ) -> None:
        self.store, self.run_id, self.metadata = store, run_id, metadata
        self.reopened = reopened  # a resume, or a distributed job's later round

    @classmethod
    def begin(
        cls,
        store: Store,
        run_id: str,
        *,
        label: str | None,
        suite_name: str,
        suite_source: str,
        suite_text: str,
        metadata: RunMetadata,
    ) -> RunLog:
        """A new run, marked running by this process."""
        metadata = metadata.replace(process=_this_process())
        store.begin_run(
            run_id,
            label=label,
            suite_name=suite_name,
            suite_source=suite_source,
            suite_text=suite_text,
            started_at=now(),
            metadata=metadata.to_dict(),
        )
        log.info("run %s begun in %s", run_id, store.path)
        return cls(store, run_id, metadata)

    @classmethod
    def reopen(cls, store: Store, run_id: str, *, resumed: bool) -> RunLog:
        """A stopped run marked running again by this process: ``--resume`` (``resumed``,
        noted in the record) or the next round of a distributed job."""
        metadata = store.run(run_id).metadata.replace(process=_this_process())
        if resumed:
            metadata = metadata.replace(resumed_at=[*metadata.resumed_at, now()])
        store.reopen_run(run_id, metadata.to_dict())
        log.info("run %s reopened", run_id)
        return cls(store, run_id, metadata, reopened=True)

    @classmethod
    def begin_suite(
        cls, store: Store, run_id: str, suite: Suite, label: str | None, metadata: RunMetadata
    ) -> RunLog:
        """A new run of ``suite``."""
        return cls.begin(
            store,
            run_id,
            label=label,
            suite_name=suite.name,
            suite_source=suite.source,
            suite_text=suite.text,
            metadata=metadata,
        )

    def update(self, **changes: Any) -> None:
        """Set fields of the run's metadata, and write it."""
        self.metadata = self.metadata.replace(**changes)
        self.store.set_metadata(self.run_id, self.metadata.to_dict())

    def failed(
        self,
        case: Case,
        round: int,
        error: str,
        carbon: CarbonSettings,
        world_size: int = 1,
    ) -> ResultRow:
        """The failed row of a case its worker could not record (it died or hung)."""
        return Recorder(self.store, self.run_id, carbon, world_size).failed(case, round, error)

    def end(self, status: str, **changes: Any) -> str:
        """End the run with ``status`` (and set ``changes`` in its metadata); returns the
        status stored, which for a reopened run is the whole run's: failed if any row is."""
        if status not in STATUSES[1:]:
            raise ValueError(f"a run ends ok, failed or interrupted, not {status!r}")
        rows = self.store.rows(self.run_id) if self.reopened and status == "ok" else []
        if any(r.status != "ok" for r in rows):
            status = "failed"
        self.metadata = self.metadata.replace(**changes)
        self.store.end_run(self.run_id, status, now(), self.metadata.to_dict())
        log.info("run %s ended %s", self.run_id, status)
        return status

    @staticmethod
    def tag(store: Store, run_id: str, ab: AbTag) -> None:
        """Mark a finished run (written by any carbonbench version) as one side of an ``ab``
        pair: one field, set in one statement, nothing else of the record rewritten."""
        store.set_metadata_field(run_id, "ab", dataclasses.asdict(ab))


def _this_process() -> Process:
    return Process(pid=os.getpid(), started=time.time())
