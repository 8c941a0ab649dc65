"""A run's totals as Prometheus metrics: text to scrape (``carbonbench export --format
openmetrics``, or ``--format prometheus``, the classic text format node_exporter's textfile
collector reads), or pushed to a Pushgateway (``measure`` and ``run`` with ``--pushgateway``).

Metrics are a snapshot of one run: per case, the sums over its measured windows (every round
and repeat of an ok row), so a scrape sees the latest night's numbers, not a history (the
store keeps that). ``prometheus_client`` is the optional ``prometheus`` extra, imported only
here and only when used; the collector is registered in a registry of its own, never in the
library's global one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from carbonbench.errors import CarbonbenchError, InputError
from carbonbench.results.outputs import check_writable
from carbonbench.results.store import ResultRow, RunRecord, Store

log = logging.getLogger(__name__)

JOB = "carbonbench"
PUSH_TIMEOUT_S = 10.0
CASE_LABELS = ("run", "case", "arch", "phase", "device", "host")
DOMAIN_LABELS = (*CASE_LABELS, "domain", "method", "additive")


class PushError(CarbonbenchError):
    """The Pushgateway did not take the metrics (the run is stored either way)."""


def require_client() -> None:
    """Refuse, before any work, when the ``prometheus`` extra is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise InputError(
            "Prometheus metrics need prometheus_client: pip install 'carbonbench[prometheus]'"
        ) from None


def check_gateway(url: str) -> None:
    """A Pushgateway URL that can be pushed to, checked before the measurement starts."""
    require_client()
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"--pushgateway {url!r} is not an http(s) URL: give one such as http://host:9091"
        )


@dataclass
class _Case:
    """One case's sums over its ok rows; energy and time per (domain, method, additive)."""

    row: ResultRow
    duration_s: float = 0.0
    tokens: int = 0
    co2e_g: float = 0.0
    energy_j: dict[tuple[str, str, bool], float] = field(default_factory=dict)
    seconds: dict[tuple[str, str, bool], float] = field(default_factory=dict)


def _cases(rows: list[ResultRow]) -> list[_Case]:
    cases: dict[str, _Case] = {}
    for row in rows:
        if not row.ok:  # a failed case's row measured nothing
            continue
        case = cases.setdefault(row.case_id, _Case(row))
        case.duration_s += row.duration_s
        case.tokens += row.tokens
        case.co2e_g += row.co2e_g
        methods, additive = row.method_by_domain or {}, row.additive_by_domain or {}
        for domain, joules in (row.energy_by_domain or {}).items():
            key = (domain, methods.get(domain, ""), additive.get(domain, True))
            case.energy_j[key] = case.energy_j.get(key, 0.0) + joules
            case.seconds[key] = case.seconds.get(key, 0.0) + row.duration_s
    return list(cases.values())


class RunCollector:
    """A ``prometheus_client`` collector of one stored run's per-case totals."""

    def __init__(self, run: RunRecord, rows: list[ResultRow]) -> None:
        self.run, self.cases = run, _cases(rows)
        self.host = run.metadata.host or ""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        run = self.run
        info = InfoMetricFamily("carbonbench_run", "The run the other metrics are of.")
        info.add_metric(
            [],
            {
                "run": run.run_id,
                "suite": run.suite_name,
                "label": run.label or "",
                "status": run.status,
                "host": self.host,
            },
        )
        yield info
        started = GaugeMetricFamily(
            "carbonbench_run_timestamp_seconds",
            "When the run started, in seconds since the epoch.",
            labels=["run", "host"],
            unit="seconds",
        )
        started.add_metric(
            [run.run_id, self.host], datetime.fromisoformat(run.started_at).timestamp()
        )
        yield started

        energy = CounterMetricFamily(
            "carbonbench_energy_joules",
            "Energy over the case's measured windows, per domain (additive=false: it overlaps "
            "other domains, do not add it to them).",
            labels=DOMAIN_LABELS,
            unit="joules",
        )
        power = GaugeMetricFamily(
            "carbonbench_power_watts",
            "Mean power over the case's measured windows, per domain.",
            labels=DOMAIN_LABELS,
            unit="watts",
        )
        duration = CounterMetricFamily(
            "carbonbench_duration_seconds",
            "Time in the case's measured windows.",
            labels=CASE_LABELS,
            unit="seconds",
        )
        tokens = CounterMetricFamily(
            "carbonbench_tokens",
            "Tokens processed in the case's measured windows.",
            labels=CASE_LABELS,
        )
        co2e = CounterMetricFamily(
            "carbonbench_co2e_grams",
            "CO2-equivalent emissions of the case's measured windows.",
            labels=CASE_LABELS,
            unit="grams",
        )
        for case in self.cases:
            r = case.row
            labels = [run.run_id, r.case_id, r.arch, r.phase, r.device, self.host]
            duration.add_metric(labels, case.duration_s)
            tokens.add_metric(labels, case.tokens)
            co2e.add_metric(labels, case.co2e_g)
            for (domain, method, additive), joules in case.energy_j.items():
                by_domain = [*labels, domain, method, str(additive).lower()]
                energy.add_metric(by_domain, joules)
                seconds = case.seconds[(domain, method, additive)]
                if seconds > 0:
                    power.add_metric(by_domain, joules / seconds)
        yield from (energy, power, duration, tokens, co2e)


def registry_of(db: str | Path, ref: str) -> tuple[Any, RunRecord]:
    """A registry of its own holding run ``ref``'s collector (id, latest or latest~N)."""
    require_client()
    from prometheus_client import CollectorRegistry

    with Store(db, create=False, readonly=True) as store:
        run = store.run(store.resolve(ref))
        rows = store.rows(run.run_id)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(run, rows))
    return registry, run


def metrics_text(db: str | Path, ref: str, fmt: str = "openmetrics") -> str:
    """Run ``ref``'s metrics as text: ``openmetrics`` (ends with ``# EOF``) or ``prometheus``,
    the classic text format, the only one node_exporter's textfile collector parses."""
    require_client()
    from prometheus_client import exposition
    from prometheus_client.openmetrics import exposition as openmetrics

    registry, _ = registry_of(db, ref)
    writer = openmetrics if fmt == "openmetrics" else exposition
    return writer.generate_latest(registry).decode()


def write_metrics(db: str | Path, ref: str, fmt: str, output: Path | None) -> None:
    """Write the metrics to ``output`` (default: standard output). A file is replaced at once
    (written beside it, then renamed), so the textfile collector never reads half of one."""
    if output is None:
        sys.stdout.write(metrics_text(db, ref, fmt))
        return
    check_writable(output, f"{fmt} export")
    text = metrics_text(db, ref, fmt)
    partial = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise InputError(f"cannot write the {fmt} export to {output}: {error.strerror}") from None


def push(url: str, db: str | Path, run_id: str) -> None:
    """Push the run's metrics to the Pushgateway at ``url``, grouped by run and host (a PUT:
    pushing a run again replaces its group); ``PushError`` when the gateway does not take them."""
    from urllib.error import HTTPError

    require_client()
    from prometheus_client import push_to_gateway

    registry, run = registry_of(db, run_id)
    key = {"run": run.run_id, "host": run.metadata.host or ""}
    try:
        push_to_gateway(url, job=JOB, grouping_key=key, registry=registry, timeout=PUSH_TIMEOUT_S)
    except HTTPError as error:  # it answered, and refused
        why = f"refused run {run_id} (HTTP {error.code} {error.reason})"
        raise PushError(f"the Pushgateway at {url} {why}") from None
    except OSError as error:  # nothing answered: URLError, a timeout
        why = f"did not answer ({getattr(error, 'reason', None) or error})"
        raise PushError(f"the Pushgateway at {url} {why}; run {run_id} is not pushed") from None
    log.info("pushed run %s to the Pushgateway at %s", run_id, url)


def push_or_warn(url: str, db: str | Path, run_id: str) -> bool:
    """``push``, with a failure as one warning line on standard error: the run is stored and
    the command's exit status stays its own."""
    try:
        push(url, db, run_id)
    except PushError as error:
        print(f"carbonbench: warning: {error}; it is stored in {db}", file=sys.stderr)
        return False
    return True
