"""Rows of one run: a measurement (or a failure) of a case becomes a ``ResultRow`` with the
run's carbon settings, written to the store as soon as it exists (one transaction each)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.meter import Measurement
from carbonbench.results.store import ResultRow, Store
from carbonbench.suites.case import Case

TIMELINE_POINTS = 200


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def downsample(m: Measurement) -> dict[str, Any]:
    """A measurement's power timeline, at most TIMELINE_POINTS samples, as rows store it."""
    stride = max(1, math.ceil(len(m.timeline.t) / TIMELINE_POINTS))
    return {
        "t": m.timeline.t[::stride],
        "watts": {d: w[::stride] for d, w in m.timeline.watts.items()},
    }


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

    def measured(
        self, case: Case, round: int, repeat: int, m: Measurement, **values: Any
    ) -> ResultRow:
        """A row of what window ``m`` measured: time, energy per domain with its method, idle
        power, dynamic energy and the timeline; ``values`` add the work and the rest."""
        return self.row(
            case,
            round,
            repeat,
            duration_s=m.duration_s,
            energy_j=m.total_energy_j,
            energy_by_domain=m.energy_j,
            method_by_domain=m.method,
            additive_by_domain=m.additive,
            idle_w=m.idle_w,
            dynamic_energy_j=m.total_dynamic_energy_j,
            timeline=downsample(m),
            **values,
        )

    def failed(
        self,
        case: Case,
        round: int,
        error: str,
        params: int | None = None,
        traceback: str | None = None,
    ) -> ResultRow:
        """Record a case that could not be measured (its measured windows, if any, stay),
        with the traceback of its own code where it raised."""
        extra = {"traceback": traceback} if traceback else {}
        row = self.row(case, round, 0, status="failed", error=error, params=params, extra=extra)
        self.save(row)
        return row

    def save(self, row: ResultRow) -> None:
        if self.store is None:
            return
        self.before_save()
        self.store.add_row(row)
        self.rows.append(row)
        self.on_row(row)
