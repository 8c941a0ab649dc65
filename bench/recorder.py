"""Rows of one run: a measurement (or a failure) of a case becomes a ``ResultRow`` with the
run's carbon settings, written to the store as soon as it exists (one transaction each)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from carbonbench.carbon import CarbonSettings
from carbonbench.case import Case
from carbonbench.store import ResultRow, Store


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Recorder:
    def __init__(
        self,
        store: Store | None,
        run_id: str,
        carbon: CarbonSettings,
        world_size: int = 1,
        on_row: Callable[[ResultRow], None] | None = None,
        before_save: Callable[[], None] | None = None,
    ) -> None:
        """``store`` None: rows are made but written elsewhere (a distributed rank other than
        0, whose rank 0 writes the job's rows)."""
        self.store, self.run_id, self.carbon = store, run_id, carbon
        self.world_size = world_size
        self.on_row = on_row or (lambda row: None)
        self.before_save = before_save or (lambda: None)  # a worker checks its supervisor
        self.rows: list[ResultRow] = []

    def row(self, case: Case, round: int, repeat: int, **values: Any) -> ResultRow:
        energy = values.get("energy_j", 0.0)
        carbon = self.carbon
        return ResultRow(
            run_id=self.run_id,
            case_id=case.case_id,
            repeat=repeat,
            round=round,
            **dataclasses.asdict(case),
            kwh=carbon.kwh(energy),
            co2e_g=carbon.co2e_g(energy),
            pue=carbon.pue,
            intensity_g_per_kwh=carbon.intensity.g_per_kwh,
            intensity_source=carbon.intensity.source,
            intensity_year=carbon.intensity.year,
            intensity_region=carbon.intensity.region,
            created_at=now(),
            world_size=self.world_size,
            **values,
        )

    def failed(self, case: Case, round: int, error: str, params: int | None = None) -> ResultRow:
        """Record a case that could not be measured (its measured windows, if any, stay)."""
        row = self.row(case, round, 0, status="failed", error=error, params=params)
        self.save(row)
        return row

    def save(self, row: ResultRow) -> None:
        if self.store is None:
            return
        self.before_save()
        self.store.add_row(row)
        self.rows.append(row)
        self.on_row(row)
