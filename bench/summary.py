"""One case's result over its repeats: what the run's table, its JSON and the report all show.

Medians over the measured windows (warm-up excluded), with the percentile-bootstrap 95%
interval of energy per token. A case whose windows all failed keeps its first error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.stats import bootstrap_ci, median
from bench.store import ResultRow

IDENTITY = ("case_id", "arch", "size", "impl", "phase", "device", "dtype")


@dataclass
class CaseSummary:
    case_id: str
    arch: str
    size: str
    impl: str
    phase: str
    device: str
    dtype: str
    params: int | None
    status: str  # ok: at least one window measured work; else failed
    error: str | None
    repeats: int  # measured windows
    j_per_token: float | None = None
    j_per_token_ci: tuple[float, float] | None = None
    j_per_token_by_domain: dict[str, float] = field(default_factory=dict)
    g_co2e_per_1k_tokens: float | None = None
    tokens_per_s: float | None = None
    j_per_tflop: float | None = None  # None when a window's FLOPs are unknown
    energy_j: float | None = None  # all measured windows together
    duration_s: float | None = None
    methods: list[str] = field(default_factory=list)
    reached_target: bool | None = None
    target_loss: float | None = None
    loss: float | None = None  # median over windows that report one


def _value(x: Any) -> Any:
    """None for what a store or a DataFrame uses to say 'missing' (None, NaN)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarise_case(records: list[Mapping[str, Any]]) -> CaseSummary:
    """The summary of one case from its rows (dicts with the store's columns)."""
    first = records[0]
    ok = [r for r in records if r["status"] == "ok" and r["tokens"] > 0]
    summary = CaseSummary(
        **{k: first[k] for k in IDENTITY},
        params=_value(first.get("params")),
        status="ok" if ok else "failed",
        error=None if ok else _value(first.get("error")),
        repeats=len(ok),
    )
    if not ok:
        return summary
    per_token = [r["energy_j"] / r["tokens"] for r in ok]
    domains: dict[str, list[float]] = {}
    for r in ok:
        for domain, joules in r["energy_by_domain"].items():
            domains.setdefault(domain, []).append(joules / r["tokens"])
    losses = [loss for r in ok if (loss := _value(r.get("loss"))) is not None]
    flops_known = all(r["flops"] > 0 for r in ok)
    summary.j_per_token = median(per_token)
    summary.j_per_token_ci = bootstrap_ci(per_token)
    summary.j_per_token_by_domain = {d: median(v) for d, v in domains.items()}
    summary.g_co2e_per_1k_tokens = median([1000 * r["co2e_g"] / r["tokens"] for r in ok])
    summary.tokens_per_s = median([r["tokens"] / r["duration_s"] for r in ok])
    summary.j_per_tflop = (
        median([r["energy_j"] / r["flops"] * 1e12 for r in ok]) if flops_known else None
    )
    summary.energy_j = sum(r["energy_j"] for r in ok)
    summary.duration_s = sum(r["duration_s"] for r in ok)
    summary.methods = sorted({m for r in ok for m in r["method_by_domain"].values()})
    summary.reached_target = _value(first.get("reached_target"))
    summary.target_loss = _value(first.get("target_loss"))
    summary.loss = median(losses) if losses else None
    return summary


def summarise(rows: Iterable[ResultRow | Mapping[str, Any]]) -> list[CaseSummary]:
    """One summary per case, in the order the cases first appear."""
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        record = dataclasses.asdict(row) if isinstance(row, ResultRow) else row
        by_case.setdefault(record["case_id"], []).append(record)
    return [summarise_case(records) for records in by_case.values()]
