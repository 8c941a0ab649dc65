"""Figures of merit per row, per round and per run: the one definition and the one reduction
the run's table, the report and the gate share.

All are per unit of work, lower is better, except ``tokens_per_s``. A metric a row cannot
give (no tokens, unknown FLOPs, no peak memory) is left out, never zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from carbonbench.results.store import ResultRow
from carbonbench.stats import median
from carbonbench.suites.thresholds import EXACT, STATISTICAL  # what the gate judges

__all__ = [
    "EXACT",
    "STATISTICAL",
    "energy_per_token_by_domain",
    "round_metrics",
    "round_values",
    "row_metrics",
    "run_metrics",
]


def row_metrics(row: ResultRow) -> dict[str, float]:
    out: dict[str, float] = {}
    if row.tokens:
        out["energy_per_token"] = row.energy_j / row.tokens
        out["time_per_token"] = row.duration_s / row.tokens
        out["co2e_per_1k_tokens"] = 1000 * row.co2e_g / row.tokens
        if row.duration_s > 0:
            out["tokens_per_s"] = row.tokens / row.duration_s
    if row.flops:  # None (unknown) or 0: no figure rather than a wrong one
        out["j_per_tflop"] = row.energy_j / row.flops * 1e12
    if row.peak_memory_bytes is not None:
        out["peak_memory"] = float(row.peak_memory_bytes)
    if row.steps and row.flops is not None:
        out["flops_per_step"] = row.flops / row.steps
    if row.params is not None:
        out["params"] = float(row.params)
    return out


def energy_per_token_by_domain(row: ResultRow) -> dict[str, float]:
    return (
        {d: joules / row.tokens for d, joules in row.energy_by_domain.items()} if row.tokens else {}
    )


def round_metrics(
    rows: Iterable[ResultRow], of: Callable[[ResultRow], dict[str, float]] = row_metrics
) -> dict[str, dict[str, list[float]]]:
    """Per case and metric, one value per round: the median of that round's windows.

    The windows of one round share its process's conditions, so they are not independent
    samples; rounds (fresh processes) are. Every interval and test is built on these values.
    Rounds are in order; a round without a value for a metric is left out of that metric.
    ``of`` gives a window's values (default: its figures of merit; ``energy_per_token_by_domain``
    for the domains)."""
    windows: dict[str, dict[int, list[dict[str, float]]]] = {}
    for row in rows:
        if row.ok:
            windows.setdefault(row.case_id, {}).setdefault(row.round, []).append(of(row))
    out: dict[str, dict[str, list[float]]] = {}
    for case_id, by_round in windows.items():
        values: dict[str, list[float]] = {}
        for round in sorted(by_round):
            metrics = by_round[round]
            for name in dict.fromkeys(k for m in metrics for k in m):
                values.setdefault(name, []).append(median([m[name] for m in metrics if name in m]))
        out[case_id] = values
    return out


def round_values(
    rows: Iterable[ResultRow], metric: str = "energy_per_token"
) -> dict[str, list[float]]:
    """One metric's round values per case (see ``round_metrics``)."""
    return {c: m.get(metric, []) for c, m in round_metrics(rows).items()}


def run_metrics(
    rows: Iterable[ResultRow], of: Callable[[ResultRow], dict[str, float]] = row_metrics
) -> dict[str, dict[str, float]]:
    """Per case and metric, the run's value: the median over its round values (see
    ``round_metrics``). What a summary shows, and one point of a case's history."""
    return {
        case_id: {name: median(values) for name, values in metrics.items()}
        for case_id, metrics in round_metrics(rows, of).items()
    }
