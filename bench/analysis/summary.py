"""One case's result over its rounds: what the run's table, its JSON and the report all show.

Each round (a fresh worker process) reduces its measured windows to their median; the case's
figures are the medians over rounds (``carbonbench.results.metrics``: the reduction the gate
and the report use too), and the 95% interval of energy per token is the percentile bootstrap
over rounds: never over windows, which share their process's conditions. One round gives no
interval. A case whose windows all failed keeps its first error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from carbonbench.results.metrics import energy_per_token_by_domain, round_metrics, run_metrics
from carbonbench.results.store import ResultRow
from carbonbench.stats import bootstrap_ci, median
from carbonbench.suites.case import Case


@dataclass
class CaseSummary:
    case: Case
    params: int | None
    status: str  # ok: at least one window measured work; else failed
    error: str | None
    rounds: int  # rounds with a measured window: the samples
    windows: int  # measured windows, all rounds together
    j_per_token: float | None = None
    j_per_token_ci: tuple[float, float] | None = None  # over rounds; None with one round
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

    @property
    def case_id(self) -> str:
        return self.case.case_id

    def to_dict(self) -> dict[str, Any]:
        """Flat: the case's id and fields first, then the figures (the JSON and the report)."""
        record = dataclasses.asdict(self)
        return {"case_id": self.case_id, **record.pop("case"), **record}


def summarise_case(rows: list[ResultRow]) -> CaseSummary:
    """The summary of one case from its rows (every round's)."""
    first = rows[0]
    ok = [r for r in rows if r.ok]
    summary = CaseSummary(
        case=first.case,
        params=first.params,
        status="ok" if ok else "failed",
        error=None if ok else first.error,
        rounds=len({r.round for r in ok}),
        windows=len(ok),
    )
    if not ok:
        return summary
    case_id = first.case_id
    per_token = round_metrics(ok)[case_id].get("energy_per_token", [])  # none without work
    values = run_metrics(ok)[case_id]
    losses = [r.loss for r in ok if r.loss is not None]
    summary.j_per_token = values.get("energy_per_token")
    summary.j_per_token_ci = bootstrap_ci(per_token) if len(per_token) > 1 else None
    summary.j_per_token_by_domain = run_metrics(ok, energy_per_token_by_domain).get(case_id, {})
    summary.g_co2e_per_1k_tokens = values.get("co2e_per_1k_tokens")
    summary.tokens_per_s = values.get("tokens_per_s")
    flops_known = all(r.flops for r in ok)  # one window of unknown FLOPs: no figure at all
    summary.j_per_tflop = values.get("j_per_tflop") if flops_known else None
    summary.energy_j = sum(r.energy_j for r in ok)
    summary.duration_s = sum(r.duration_s for r in ok)
    summary.methods = sorted({m for r in ok for m in r.method_by_domain.values()})
    summary.reached_target = first.reached_target
    summary.target_loss = first.target_loss
    summary.loss = median(losses) if losses else None
    return summary


def summarise(rows: Iterable[ResultRow], order: list[str] | None = None) -> list[CaseSummary]:
    """One summary per case: in ``order`` (case ids; the suite's), then as they first appear
    (rounds visit the cases shuffled)."""
    by_case: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_case.setdefault(row.case_id, []).append(row)
    rank = {case_id: i for i, case_id in enumerate(order or [])}
    ids = sorted(by_case, key=lambda c: rank.get(c, len(rank)))
    return [summarise_case(by_case[c]) for c in ids]
