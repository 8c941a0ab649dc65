"""A case's history: the earlier runs a run may be judged against, and their values.

The gate (the between-run spread, the nightly level) and the change-point search both read
it, so which runs belong to it is decided here, once. A run contributes one value per case
and metric: the median over its rounds (``carbonbench.results.metrics.run_metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from carbonbench.results.metrics import run_metrics
from carbonbench.results.store import ResultRow, RunRecord

HISTORY_RUNS = 60  # earlier comparable runs read for the between-run noise

# case -> metric -> (run id, the run's value), oldest first
History = dict[str, dict[str, list[tuple[str, float]]]]


def comparable(earlier: RunRecord, run: RunRecord) -> bool:
    """Whether ``earlier`` belongs to ``run``'s history: the same suite on the same hardware,
    measured by ``carbonbench run`` (not a command, a tracked block or an ab comparison)."""
    return (
        earlier.suite_name == run.suite_name
        and earlier.hardware.comparable() == run.hardware.comparable()
        and earlier.metadata.kind == run.metadata.kind
        and earlier.metadata.ab is None
        and earlier.status in ("ok", "failed")
    )


def earlier_runs(
    runs: list[RunRecord], run: RunRecord, limit: int = HISTORY_RUNS
) -> list[RunRecord]:
    """The latest ``limit`` runs before ``run`` that are comparable with it, oldest first."""
    return [r for r in runs if r.seq < run.seq and comparable(r, run)][-limit:]


def run_values(
    runs: Iterable[RunRecord],
    rows_of: Callable[[str], list[ResultRow]],
    metrics: Iterable[str],
) -> History:
    """Per case and metric, each run's value, in the order of ``runs``; a run that did not
    measure a case's metric is left out of that series."""
    wanted = tuple(metrics)
    out: History = {}
    for run in runs:
        for case_id, values in run_metrics(rows_of(run.run_id)).items():
            for metric in wanted:
                if metric in values:
                    series = out.setdefault(case_id, {}).setdefault(metric, [])
                    series.append((run.run_id, values[metric]))
    return out
