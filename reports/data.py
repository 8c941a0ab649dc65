"""What the report shows, read from the results store: runs, rows and per-case summaries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import Store, StoreError
from bench.summary import summarise_case


@dataclass
class ReportData:
    db: Path
    runs: list[dict[str, Any]]  # selected runs, oldest first
    rows: pd.DataFrame  # every row of the selected runs
    cases: pd.DataFrame  # one line per (run, case): medians, intervals, work, status

    @property
    def latest(self) -> dict[str, Any]:
        return self.runs[-1]


def select_runs(store: Store, refs: list[str] | None, last: int | None) -> list[dict[str, Any]]:
    runs = store.runs()
    if not runs:
        raise StoreError(f"the store {store.path} holds no runs yet: run `carbonbench run` first")
    if refs:
        wanted = [store.resolve(ref) for ref in refs]
        by_id = {r["run_id"]: r for r in runs}
        return [by_id[i] for i in dict.fromkeys(wanted)]
    return runs[-(last or 1) :]


def summarise_cases(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (run, case): medians over repeats with 95% bootstrap intervals, and the work."""
    out = []
    for (run_id, _), group in rows.groupby(["run_id", "case_id"], sort=False):
        case = summarise_case(group.to_dict("records"))
        low, high = case.j_per_token_ci or (None, None)
        out.append(
            {
                "run_id": run_id,
                **dataclasses.asdict(case),
                "j_per_token_low": low,
                "j_per_token_high": high,
                "g_per_1k_tokens": case.g_co2e_per_1k_tokens,
                "methods": ", ".join(case.methods) if case.status == "ok" else None,
            }
        )
    return pd.DataFrame(out)


def load(db: str | Path, refs: list[str] | None = None, last: int | None = None) -> ReportData:
    with Store(db, create=False) as store:
        runs = select_runs(store, refs, last)
        records = [row for run in runs for row in store.rows(run["run_id"])]
    if not records:
        ids = ", ".join(r["run_id"] for r in runs)
        raise StoreError(f"the selected run(s) {ids} hold no results yet")
    rows = pd.DataFrame(records)
    return ReportData(Path(db), runs, rows, summarise_cases(rows))


def energy_by_method(rows: pd.DataFrame) -> dict[str, float]:
    """Joules per measurement method over all rows, domains that overlap others left out."""
    totals: dict[str, float] = {}
    for _, row in rows.iterrows():
        additive = row["additive_by_domain"] or {}
        for domain, joules in row["energy_by_domain"].items():
            if not additive.get(domain, True):
                continue
            method = row["method_by_domain"].get(domain, "modelled")
            totals[method] = totals.get(method, 0.0) + joules
    return totals
