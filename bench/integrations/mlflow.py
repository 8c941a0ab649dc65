"""A measurement's figures in MLflow, with no trainer in between: ``track(..., mlflow=True)``
and ``carbonbench measure --mlflow``.

They go to the active MLflow run (the fluent API's, or ``MLFLOW_RUN_ID``'s, as ``mlflow run``
sets it for a command), or else to a new run named after the label, ended here again. Figures
are metrics; how they were obtained (each domain's method, the carbon intensity and its
source, the PUE, the sensors' constants, the stored run) are tags, not params: a tag may be
set again, so a second tracked block in the same MLflow run never conflicts with the first.
Each block logs the next step of every metric, so blocks tracked in one run (an epoch each)
make a curve. ``mlflow`` (the optional ``mlflow`` extra) is imported only here, when used;
the mlflow-skinny client is enough.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonbench import __version__
from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.meter import Measurement
from carbonbench.errors import CarbonbenchError, InputError

if TYPE_CHECKING:
    from carbonbench.integrations.tracking import Tracker

log = logging.getLogger(__name__)

PREFIX = "carbonbench"
MAX_KEY = 250  # MLflow's limit on metric and tag names
MAX_VALUE = 5000  # a tag value: MLflow takes 8000 now, 5000 on older tracking servers
BATCH = 100  # tags per log_batch call: MLflow's limit
STEP_METRIC = "energy/joules"  # its history's length is the next block's step


class MlflowLogError(CarbonbenchError):
    """MLflow did not take the figures (the measurement, and its stored run, are kept)."""


def require_mlflow() -> None:
    """Refuse, before any work, when the ``mlflow`` extra is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise InputError(
            "logging to MLflow needs the mlflow client: pip install 'carbonbench[mlflow]'"
        ) from None


def name(text: str) -> str:
    """``text`` as part of an MLflow metric or tag name: characters other than letters,
    digits, ``_ - .`` and space become ``_`` (``cpu:package-0`` -> ``cpu_package-0``); ``/``
    too, since MLflow's UI groups metrics by it."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", text)


def metrics(
    m: Measurement, carbon: CarbonSettings, *, work: float | None = None, unit: str = "unit"
) -> dict[str, float]:
    """The measurement's figures by MLflow metric name, named as the trainer callbacks name
    theirs (``energy/...``), so a run's figures read the same whichever way they came."""
    total = m.total_energy_j
    out = {
        "energy/joules": total,
        **{f"energy/joules_{name(d)}": joules for d, joules in m.energy_j.items()},
        "energy/duration_seconds": m.duration_s,
        "energy/co2e_grams": carbon.co2e_g(total),
    }
    if work:
        out[f"energy/joules_per_{name(unit)}"] = total / work
    dynamic = m.total_dynamic_energy_j
    if dynamic is not None:
        out["energy/dynamic_joules"] = dynamic
    return out


def _flat(key: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f"{key}.{name(str(k))}", v)
    else:
        yield key, value if isinstance(value, str) else json.dumps(value, default=str)


def tags(
    m: Measurement,
    carbon: CarbonSettings,
    *,
    label: str,
    run_id: str | None = None,
    db: str | Path | None = None,
    error: str | None = None,
) -> dict[str, str]:
    """What the figures rest on, by MLflow tag name, each cut to MLflow's limits."""
    out = {
        f"{PREFIX}.version": __version__,
        f"{PREFIX}.label": label,
        f"{PREFIX}.ended": error or "ok",
        **{f"{PREFIX}.method.{name(d)}": method for d, method in m.method.items()},
        f"{PREFIX}.carbon_intensity_g_per_kwh": f"{carbon.intensity.g_per_kwh:g}",
        f"{PREFIX}.carbon_intensity_source": carbon.intensity.source,
        f"{PREFIX}.pue": f"{carbon.pue:g}",
        f"{PREFIX}.pue_source": carbon.pue_source,
    }
    # every source's constants: a modelled source's decide its figures, the others' say what
    # was read (RAPL zones, NVML devices)
    for source, constants in m.constants.items():
        out.update(_flat(f"{PREFIX}.constants.{name(source)}", constants))
    if run_id is not None:
        out[f"{PREFIX}.run_id"] = run_id
        if db is not None:
            out[f"{PREFIX}.store"] = str(db)
    return {k[:MAX_KEY]: _cut(v) for k, v in out.items()}


def _cut(value: str) -> str:
    return value if len(value) <= MAX_VALUE else value[: MAX_VALUE - 3] + "..."


def log_measurement(
    m: Measurement,
    carbon: CarbonSettings,
    *,
    label: str,
    work: float | None = None,
    unit: str = "unit",
    run_id: str | None = None,
    db: str | Path | None = None,
    error: str | None = None,
) -> str:
    """Log ``m`` to the active MLflow run, or to a new one named ``label`` that ends here
    (``FAILED`` when ``error`` says the work failed); the MLflow run's id. ``run_id`` and
    ``db``: the carbonbench run it is stored as, if it is."""
    require_mlflow()
    import mlflow
    from mlflow.exceptions import MlflowException

    figures = metrics(m, carbon, work=work, unit=unit)
    labels = tags(m, carbon, label=label, run_id=run_id, db=db, error=error)
    active = mlflow.active_run()
    target = active.info.run_id if active is not None else os.environ.get("MLFLOW_RUN_ID")
    try:
        if target:
            _log(mlflow, target, figures, labels)
            return target
        run = mlflow.start_run(run_name=label)
        status = "FAILED" if error else "FINISHED"
        try:
            _log(mlflow, run.info.run_id, figures, labels)
        except BaseException:
            status = "FAILED"
            raise
        finally:
            mlflow.end_run(status)
        return run.info.run_id
    except MlflowException as failure:
        reason = (str(failure).strip() or type(failure).__name__).splitlines()[0]
        raise MlflowLogError(f"MLflow did not take the figures of {label!r}: {reason}") from None


def log_tracker(tracker: Tracker) -> str:
    """``log_measurement`` of what ``tracker`` has just measured (``track``, ``measure``)."""
    assert tracker.measurement is not None and tracker.carbon is not None
    return log_measurement(
        tracker.measurement,
        tracker.carbon,
        label=tracker.label,
        work=tracker.work,
        unit=tracker.unit,
        run_id=tracker.run_id,
        db=tracker.db,
        error=tracker.details.get("error"),
    )


def _log(mlflow: Any, run_id: str, figures: dict[str, float], labels: dict[str, str]) -> None:
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient()
    step = len(client.get_metric_history(run_id, STEP_METRIC))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in figures.items()])
    items = [RunTag(k, v) for k, v in labels.items()]
    for start in range(0, len(items), BATCH):
        client.log_batch(run_id, tags=items[start : start + BATCH])
    log.info("logged %d metrics and %d tags to MLflow run %s", len(figures), len(items), run_id)
