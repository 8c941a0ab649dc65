"""What the report shows, read from the results store: runs, rows and per-case summaries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from carbonbench.analysis.summary import summarise
from carbonbench.results.store import ResultRow, RunRecord, Store, StoreError
from carbonbench.suites.suite import case_order


@dataclass
class ReportData:
    db: Path
    runs: list[RunRecord]  # selected runs, oldest first
    rows: pd.DataFrame  # every row of the selected runs, one column per field
    cases: pd.DataFrame  # one line per (run, case): medians, intervals, work, status
    results: list[ResultRow]  # the same rows, for carbonbench.results.metrics' reductions

    @property
    def latest(self) -> RunRecord:
        return self.runs[-1]


def select_runs(store: Store, refs: list[str] | None, last: int | None) -> list[RunRecord]:
    runs = store.runs()
    if not runs:
        raise StoreError(f"the store {store.path} holds no runs yet: run `carbonbench run` first")
    if refs:
        wanted = [store.resolve(ref) for ref in refs]
        by_id = {r.run_id: r for r in runs}
        return [by_id[i] for i in dict.fromkeys(wanted)]
    return runs[-(last or 1) :]


def summarise_cases(
    rows: list[ResultRow], orders: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """Per (run, case): medians over rounds with 95% bootstrap intervals, and the work; each
    run's cases in its suite's order (``orders``: run id -> case ids)."""
    by_run: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    out = []
    for run_id, run_rows in by_run.items():
        for case in summarise(run_rows, (orders or {}).get(run_id)):
            low, high = case.j_per_token_ci or (None, None)
            out.append(
                {
                    "run_id": run_id,
                    **case.to_dict(),
                    "j_per_token_low": low,
                    "j_per_token_high": high,
                    "g_per_1k_tokens": case.g_co2e_per_1k_tokens,
                    "methods": ", ".join(case.methods) if case.status == "ok" else None,
                }
            )
    return pd.DataFrame(out)


def load(db: str | Path, refs: list[str] | None = None, last: int | None = None) -> ReportData:
    with Store(db, create=False, readonly=True) as store:
        runs = select_runs(store, refs, last)
        rows = [row for run in runs for row in store.rows(run.run_id)]
    if not rows:
        ids = ", ".join(r.run_id for r in runs)
        raise StoreError(f"the selected run(s) {ids} hold no results yet")
    frame = pd.DataFrame([r.to_dict() for r in rows])
    orders = {run.run_id: case_order(run.suite_text, run.suite_source) for run in runs}
    return ReportData(Path(db), runs, frame, summarise_cases(rows, orders), rows)


def energy_by_method(rows: pd.DataFrame) -> dict[str, float]:
    """Joules per measurement method over all rows, domains that overlap others left out."""
    totals: dict[str, float] = {}
    for _, row in rows.iterrows():
        additive = row["additive_by_domain"] or {}
        for domain, joules in row["energy_by_domain"].items():
            if not additive.get(domain, True):
                continue
            method = row["method_by_domain"][domain]
            totals[method] = totals.get(method, 0.0) + joules
    return totals


def modelled_domains(rows: pd.DataFrame) -> set[str]:
    """The domains whose stored method is ``modelled`` in any of ``rows``: the figures hatch
    them. Decided from the method, never from a domain's name."""
    return {
        domain
        for methods in rows["method_by_domain"]
        if isinstance(methods, dict)
        for domain, method in methods.items()
        if method == "modelled"
    }
