"""What the report shows, read from the results store: runs, rows and per-case summaries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.stats import bootstrap_ci
from bench.store import Store, StoreError


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


# Columns only a case that measured something fills: present (empty) even when none did.
MEASURED = (
    "j_per_token",
    "j_per_token_low",
    "j_per_token_high",
    "j_per_token_by_domain",
    "g_per_1k_tokens",
    "tokens_per_s",
    "j_per_tflop",
    "energy_j",
    "duration_s",
    "methods",
    "reached_target",
    "target_loss",
    "loss",
)


def summarise_cases(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (run, case): medians over repeats with 95% bootstrap intervals, and the work."""
    out = []
    for (run_id, case_id), group in rows.groupby(["run_id", "case_id"], sort=False):
        first = group.iloc[0]
        ok = group[(group["status"] == "ok") & (group["tokens"] > 0)]
        entry: dict[str, Any] = {
            "run_id": run_id,
            "case_id": case_id,
            **{k: first[k] for k in ("arch", "size", "impl", "phase", "device", "dtype")},
            "params": first["params"],
            "status": "ok" if len(ok) else "failed",
            "error": None if len(ok) else first["error"],
            "repeats": len(ok),
        }
        if len(ok):
            per_token = (ok["energy_j"] / ok["tokens"]).to_numpy()
            low, high = bootstrap_ci(per_token)
            domains: dict[str, list[float]] = {}
            for energy, tokens in zip(ok["energy_by_domain"], ok["tokens"], strict=True):
                for domain, joules in energy.items():
                    domains.setdefault(domain, []).append(joules / tokens)
            methods = {m for d in ok["method_by_domain"] for m in d.values()}
            entry.update(
                j_per_token=float(pd.Series(per_token).median()),
                j_per_token_low=low,
                j_per_token_high=high,
                j_per_token_by_domain={d: float(pd.Series(v).median()) for d, v in domains.items()},
                g_per_1k_tokens=float((1000 * ok["co2e_g"] / ok["tokens"]).median()),
                tokens_per_s=float((ok["tokens"] / ok["duration_s"]).median()),
                j_per_tflop=float((ok["energy_j"] / ok["flops"] * 1e12).median())
                if (ok["flops"] > 0).all()
                else None,
                energy_j=float(ok["energy_j"].sum()),
                duration_s=float(ok["duration_s"].sum()),
                methods=", ".join(sorted(methods)),
                reached_target=first["reached_target"],
                target_loss=first["target_loss"],
                loss=float(ok["loss"].median()) if ok["loss"].notna().any() else None,
            )
        out.append(entry)
    frame = pd.DataFrame(out)
    return frame.reindex(columns=[*frame.columns, *(c for c in MEASURED if c not in frame)])


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
