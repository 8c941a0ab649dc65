"""What the trainer callbacks (``integrations.transformers``, ``integrations.lightning``) share:
the meter of the process that measures for its host, the figures they add to the trainer's
logs, and the run they store as ``track()`` does.

Logs take numbers only, so a figure's method is not in them: the domain in each name says it
(``cpu_modelled`` and ``ram_modelled`` are models; ``cpu_package-0``, ``gpu_0`` are read from
counters or sampled power), the meter's one info message names every method, and the stored
run keeps each domain's method.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from carbonbench.energy.carbon import CarbonSettings, resolve
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.execution.topology import topology_from_env
from carbonbench.integrations.tracking import store_measurement

log = logging.getLogger(__name__)


def metric_name(domain: str) -> str:
    """A domain as a metric name's part: MLflow refuses ``:`` in names, and W&B and TensorBoard
    group on ``/``, so ``cpu:package-0`` is ``cpu_package-0``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", domain)


def figures(
    m: Measurement, carbon: CarbonSettings, tokens: float | None = None, prefix: str = "energy/"
) -> dict[str, float]:
    """A window's figures as log entries: total joules, joules per domain, grams of CO2e, and
    joules per token when the tokens are known."""
    out = {f"{prefix}joules": m.total_energy_j}
    out.update({f"{prefix}joules_{metric_name(d)}": j for d, j in m.energy_j.items()})
    out[f"{prefix}co2e_grams"] = carbon.co2e_g(m.total_energy_j)
    if tokens:
        out[f"{prefix}joules_per_token"] = m.total_energy_j / tokens
    return out


def summary(m: Measurement, **about: Any) -> dict[str, Any]:
    """An evaluation inside a training, as the stored run's metadata keeps it."""
    return {
        **about,
        "duration_s": m.duration_s,
        "energy_j": m.total_energy_j,
        "energy_j_by_domain": dict(m.energy_j),
        "method": dict(m.method),
    }


def host_share() -> float:
    """This host's share of a distributed job's processes (1 outside one): tokens a trainer
    counts over the whole job, times this, are about those of the host whose energy one local
    process zero measures, when every process takes batches of one size."""
    topology = topology_from_env()
    return 1.0 if topology is None else topology.local_world_size / topology.world_size


class MeterOwner:
    """The meter a trainer callback measures with: opened when the work it measures begins
    (its sensors announced once per callback, the carbon settings resolved then), closed when
    that work ends, and the run it stores. The callback sets ``label``, ``db``, ``carbon``,
    ``interval_s``, ``evaluations = []``, ``run_id = None``, ``_meter = None`` and
    ``_announced = False`` in its ``__init__``."""

    label: str
    db: str | Path | None
    carbon: CarbonSettings | None
    interval_s: float
    evaluations: list[dict[str, Any]]
    run_id: str | None
    _meter: EnergyMeter | None
    _announced: bool

    @property
    def _carbon(self) -> CarbonSettings:
        assert self.carbon is not None
        return self.carbon

    def _start(self) -> EnergyMeter:
        self.carbon = self.carbon or resolve()
        if self._meter is None:
            self._meter = open_meter(self.interval_s, announce=not self._announced)
            self._announced = True
        return self._meter

    def _store(
        self,
        m: Measurement,
        *,
        tokens: float | None,
        framework: str,
        global_step: int,
        processes: int,
        error: str | None = None,
    ) -> None:
        """The training's window as a run of kind ``training``, one row, as ``track()``
        stores (with ``db`` only); its id in ``run_id``."""
        if self.db is None or self._meter is None:
            return
        tracker = store_measurement(
            self.label,
            self._meter,
            m,
            error=error,
            db=self.db,
            work=tokens or None,
            unit="token",
            carbon=self._carbon,
            interval_s=self.interval_s,
            kind="training",
            details={
                "framework": framework,
                "global_step": global_step,
                "processes": processes,
                "evaluations": self.evaluations,
            },
        )
        self.run_id = tracker.run_id

    def _close_meter(self) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None


def open_meter(interval_s: float, announce: bool) -> EnergyMeter:
    """A meter over every domain this host has. ``announce``: say once, at info level, what it
    measures and how, and why nothing better (no RAPL, no NVML, ...)."""
    meter = EnergyMeter(interval_s=interval_s)
    if announce:
        domains = ", ".join(f"{d} ({meter.methods[d]})" for d in meter.domains)
        log.info("carbonbench measures %s", domains or "nothing: no domain found")
        for diagnostic in meter.diagnostics:
            log.info("carbonbench: %s", diagnostic)
    return meter
