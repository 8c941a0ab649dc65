"""Finishing a stopped run (``carbonbench run --resume REF``): which runs may be resumed, and
how the rest is measured: as the run was (its suite, filters, label, carbon settings, corpus,
CPU TDP and seed), on the same machine, each round's cases that have no rows in that round, in
the round's stored order.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.hardware import Hardware
from carbonbench.errors import InputError
from carbonbench.results.store import RunRecord, Store
from carbonbench.suites.suite import Suite, narrow, parse


@dataclass(frozen=True)
class ResumePlan:
    run_id: str
    suite: Suite  # only the cases still to measure
    rounds: list[tuple[int, list[str]]]  # (round, case ids in its stored order) still to measure
    carbon: CarbonSettings
    label: str | None
    filters: dict[str, list[str]]
    corpus: str | None
    cpu_tdp_w: float | None
    seed: int


def still_running(run: RunRecord) -> bool:
    """Whether the process that wrote a run marked running may still be at it."""
    recorded = run.metadata.process
    if run.metadata.host != socket.gethostname() or recorded is None:
        return True  # another machine's, or of unknown process: assume so
    try:
        process = psutil.Process(recorded.pid)
    except psutil.NoSuchProcess:
        return False
    return process.pid != os.getpid() and process.create_time() <= recorded.started


def plan_resume(db: str | Path, ref: str) -> ResumePlan:
    """What is left of run ``ref``, or an error saying why it cannot be resumed here."""
    with Store(db, create=False) as store:
        run_id = store.resolve(ref)
        run = store.run(run_id)
        done = {(r.round, r.case_id) for r in store.rows(run_id)}
    meta = run.metadata
    if run.status == "running" and still_running(run):
        pid = meta.process.pid if meta.process else None
        raise InputError(f"run {run_id} is still running (process {pid} on {meta.host})")
    if meta.world_size > 1:
        raise InputError(f"run {run_id} was distributed: --resume takes single-process runs")
    here, then = Hardware.here(), run.hardware
    if here != then:
        raise InputError(f"run {run_id} ran on other hardware ({then}); this is {here}")
    filters = meta.filters
    suite = narrow(parse(run.suite_text, run.suite_source), **filters)
    # the rounds as scheduled (a run from before rounds: one round, in the suite's order)
    order = meta.case_order or [(0, [c.case_id for c in suite.cases])]
    rounds = [(r, [c for c in ids if (r, c) not in done]) for r, ids in order]
    rounds = [(r, ids) for r, ids in rounds if ids]
    if not rounds:
        raise InputError(f"run {run_id} has rows for every case: nothing to resume")
    left = {c for _, ids in rounds for c in ids}
    suite = dataclasses.replace(suite, cases=tuple(c for c in suite.cases if c.case_id in left))
    if run.carbon is None:
        raise InputError(f"run {run_id} has no carbon settings stored: it cannot be resumed")
    stored = meta.options
    return ResumePlan(
        run_id=run_id,
        suite=suite,
        rounds=rounds,
        carbon=run.carbon,
        label=run.label,
        filters=filters,
        corpus=stored.corpus,
        cpu_tdp_w=stored.cpu_tdp_w,
        seed=stored.seed,
    )
