"""Render the report: one self-contained HTML file, plotly.js inlined once, one Jinja2
template with autoescaping (nothing a user typed becomes markup)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import plotly.io as pio
from plotly.offline import get_plotlyjs

from carbonbench import __version__
from carbonbench.analysis.estimate import from_measurement, joules_per_flop_by_round
from carbonbench.analysis.pareto import (
    ParetoError,
    analyse,
    saving,
    slowdown,
    sweeps,
    window_metrics,
)
from carbonbench.energy.carbon import J_PER_KWH, equivalents
from carbonbench.reports import figures
from carbonbench.reports.data import ReportData, energy_by_method, load, modelled_domains
from carbonbench.results.metrics import round_metrics
from carbonbench.results.outputs import check_writable, write_text
from carbonbench.results.store import ResultRow, RunRecord
from carbonbench.stats import median
from carbonbench.suites.phases import SERVE

CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Rendered:
    path: Path
    bytes: int
    seconds: float
    figures: int


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("carbonbench.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _div(fig) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config=CONFIG)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}g}"


def _energy(joules: float) -> str:
    """Joules in the unit a person reads best: J, Wh or kWh."""
    if joules < 360:
        return f"{joules:.3g} J"
    if joules < 3.6e6:
        return f"{joules / 3600:.3g} Wh"
    return f"{joules / J_PER_KWH:.3g} kWh"


def _summary(data: ReportData) -> dict[str, Any]:
    ok = data.rows[data.rows["status"] == "ok"]
    joules = float(ok["energy_j"].sum())
    co2e = float(ok["co2e_g"].sum())
    methods = energy_by_method(ok) if len(ok) else {}
    total = sum(methods.values()) or 1.0
    carbons = {
        (c.intensity.g_per_kwh, c.intensity.source, c.pue, c.pue_source)
        for r in data.runs
        if (c := r.carbon) is not None
    }
    return {
        "energy": _energy(joules),
        "kwh": joules / J_PER_KWH,
        "co2e_g": co2e,
        "carbon": sorted(carbons),
        "equivalents": equivalents(co2e),
        "method_share": {m: j / total for m, j in sorted(methods.items())},
        "cases": int(data.cases["case_id"].nunique()),
        "failed": int((data.cases["status"] == "failed").sum()),
        "windows": len(ok),
        "measured_seconds": float(ok["duration_s"].sum()),
    }


def _milli(value: float | None) -> float | None:
    """x 1000, or None for a figure with no work to divide by (a tracked block, say)."""
    return None if value is None or value != value else 1e3 * value


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:,.0f}"


def _interval(c) -> str:
    low, high = c["j_per_token_low"], c["j_per_token_high"]
    if low is None or low != low:  # None or NaN: a single round has no interval
        return "one round"
    return f"{_fmt(1e3 * low)} to {_fmt(1e3 * high)}"


def _case_table(cases) -> list[dict[str, str]]:
    table = []
    for _, c in cases.iterrows():
        ok = c["status"] == "ok"
        table.append(
            {
                "case": f"{c['arch']} · {c['phase']}",
                "detail": f"{c['size']} · {c['impl']} · {c['device']} · {c['dtype']}",
                "mj_per_token": _fmt(_milli(c["j_per_token"])) if ok else "",
                "ci": _interval(c) if ok else "",
                "mg_per_1k": _fmt(_milli(c["g_per_1k_tokens"])) if ok else "",
                "tokens_per_s": _fmt_rate(c["tokens_per_s"]) if ok else "",
                "j_per_tflop": _fmt(c.get("j_per_tflop")) if ok else "",
                "method": c["methods"] if ok else "",
                "rounds": f"{c['rounds']} ({c['windows']})",
                "status": "ok" if ok else f"failed: {c['error']}",
                "failed": not ok,
            }
        )
    return table


PROJECTED_PARAMS, PROJECTED_TOKENS = 1e9, 2e10  # 1 B parameters on 20 tokens per parameter


def _projection(run: RunRecord, rows: list[ResultRow]) -> list[dict[str, str]]:
    """Per architecture trained in the run: its measured joules per FLOP, scaled to one
    reference job (6ND FLOPs), with the measurement's interval (as ``carbonbench estimate
    --from-run`` projects it)."""
    carbon = run.carbon
    if carbon is None:
        return []
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in rows:
        if r.run_id == run.run_id and r.phase == "train" and r.ok and r.flops:
            groups.setdefault((r.arch, r.device, r.dtype), []).append(r)
    out = []
    for (arch, device, dtype), group in groups.items():
        estimate = from_measurement(
            carbon,
            joules_per_flop=joules_per_flop_by_round(group),
            flops=6 * PROJECTED_PARAMS * PROJECTED_TOKENS,
            flops_source="6 N D",
            run=run.run_id,
            arch=arch,
            device=device,
            dtype=dtype,
        )
        low, high = estimate.energy_kwh_range or (estimate.energy_kwh, estimate.energy_kwh)
        out.append(
            {
                "arch": arch,
                "where": f"{device} · {dtype}",
                "j_per_tflop": _fmt(estimate.inputs["joules_per_flop"] * 1e12),
                "kwh": f"{estimate.energy_kwh:,.0f}",
                "range": f"{low:,.0f} to {high:,.0f}",
                "co2e_t": _fmt(estimate.co2e_kg / 1000),
            }
        )
    return out


def _spread(interval, scale: float) -> str:
    """``7.01 (6.54 to 7.08)``: a median over rounds and its interval, scaled."""
    low, high = scale * interval.low, scale * interval.high
    return f"{_fmt(scale * interval.median, 4)} ({_fmt(low)} to {_fmt(high)})"


def _change(change) -> str:
    text = f"{100 * change.median:+.1f}% ({100 * change.low:+.1f}% to {100 * change.high:+.1f}%)"
    return text + ("" if change.significant else ", not significant")


def _settings(run: RunRecord, rows: list[ResultRow]) -> list[dict[str, Any]]:
    """Per group of the run that sweeps settings (``carbonbench pareto``'s defaults): its
    energy-time figure and its front, each setting's saving and slowdown against the default.
    Nothing for a run that sweeps no setting, or whose rows have no energy and time per
    token (a tracked block)."""
    if not sweeps(rows):
        return []
    try:
        result = analyse(rows, run)
    except ParetoError:
        return []
    out = []
    x_scale, x_unit = figures.metric_axis(result.x)
    y_scale, y_unit = figures.metric_axis(result.y)
    for group in result.groups:
        chosen, base = group.recommended, group.baseline
        if chosen is None or base is None:
            continue
        front = []
        for s in group.front:
            marks = ["recommended"] if s is chosen.setting else []
            front.append(
                {
                    "setting": s.label(group.knobs),
                    "y": _spread(s.y, y_scale),
                    "x": _spread(s.x, x_scale),
                    "saving": _change(saving(s, base)),
                    "slowdown": _change(slowdown(s, base)),
                    "rounds": s.rounds,
                    "marks": ", ".join(marks + (["default"] if s is base else [])),
                }
            )
        out.append(
            {
                "title": group.title,
                "knobs": ", ".join(group.knobs),
                "div": _div(figures.pareto_front(group, result.x, result.y)),
                "front": front,
                "x_unit": x_unit,
                "y_unit": y_unit,
                "rule": chosen.rule,
                "recommended": chosen.setting.label(group.knobs),
                "default": f"{base.label(group.knobs)} ({group.baseline_source})",
                "saving": _change(chosen.saving),
                "dominated": sum(s.status == "dominated" for s in group.settings),
                "settings": len(group.settings),
            }
        )
    return out


SERVING_X = "itl_p90_s"  # the serving section's latency axis


def _serving(run: RunRecord, rows: list[ResultRow]) -> dict[str, Any] | None:
    """A serving run (``carbonbench serving``): per level, the medians over rounds of energy
    per output token and per request, throughput and latency percentiles; and energy per token
    against p90 inter-token latency with its front and, given the run's latency limit, the
    level within it at the lowest energy per token (else ``pareto``'s default rule)."""
    served = [r for r in rows if r.phase == SERVE]
    if not served:
        return None
    levels = []
    for case_id, values in round_metrics(served, window_metrics).items():
        first = next(r for r in served if r.case_id == case_id)
        rounds = len(values.get("energy_per_token", []))

        def med(name: str, scale: float = 1.0, digits: int = 3, values: dict = values) -> str:
            got = values.get(name)
            return _fmt(scale * median(got), digits) if got else "-"

        failed = sum(1 for r in served if r.case_id == case_id and not r.ok)
        levels.append(
            {
                "level": f"concurrency {first.concurrency}"
                if first.concurrency is not None
                else f"rate {first.rate:g}/s",
                "rounds": rounds,
                "failed": failed,
                "mj_per_token": med("energy_per_token", 1e3),
                "j_per_request": med("energy_per_request_j"),
                "tokens_per_s": med("steady_tokens_per_s", 1.0, 4),
                "ttft": " / ".join(med(f"ttft_p{q}_s", 1e3) for q in (50, 90, 99)),
                "itl": " / ".join(med(f"itl_p{q}_s", 1e3) for q in (50, 90, 99)),
                "e2e": " / ".join(med(f"e2e_p{q}_s", 1e3) for q in (50, 90, 99)),
                "source": ", ".join(
                    sorted(
                        {
                            str(r.extra.get("tokens_source"))
                            for r in served
                            if r.case_id == case_id and r.ok
                        }
                    )
                ),
            }
        )
    limit = (run.metadata.extra.get("serving") or {}).get("latency_limit_s")
    front = None
    try:
        result = analyse(served, run, x=SERVING_X, y="energy_per_token", max_x=limit)
    except ParetoError:
        result = None
    if result is not None and result.groups:
        group = result.groups[0]
        chosen = group.recommended
        front = {
            "div": _div(figures.pareto_front(group, result.x, result.y)),
            "rule": chosen.rule if chosen else f"{SERVING_X} <= {limit:g}",
            "recommended": chosen.setting.label(group.knobs) if chosen else None,
            "notes": result.notes,
        }
    return {"model": served[0].arch, "levels": levels, "front": front, "limit": limit}


def _provenance(runs: list[RunRecord]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        meta = run.metadata
        out.append(
            {
                "run_id": run.run_id,
                "label": run.label or "",
                "suite": f"{run.suite_name} ({run.suite_source})",
                "status": run.status,
                "when": f"{run.started_at} → {run.ended_at or 'unfinished'}",
                "host": meta.host or "",
                "hardware": "; ".join(
                    x
                    for x in (
                        f"CPU {meta.cpu} ({meta.logical_cpus} logical)",
                        ", ".join(meta.gpus) or "no GPU",
                        f"driver {meta.driver}" if meta.driver else "",
                    )
                    if x
                ),
                "software": ", ".join(f"{k} {v}" for k, v in meta.versions.items())
                + (f", CUDA {meta.cuda}" if meta.cuda else ""),
                "commit": meta.git_commit or "not in a git checkout",
                "sensors": "; ".join(
                    f"{source}: "
                    + ", ".join(
                        f"{d} ({m})" for d, m in zip(s["domains"], s["methods"], strict=True)
                    )
                    for source, s in meta.sensors.items()
                ),
                "constants": meta.sensor_constants,
                "diagnostics": meta.diagnostics,
                "idle_w": meta.idle_w or {},
                "skipped": meta.skipped,
                "sampler": dataclasses.asdict(meta.sampler) if meta.sampler else {},
            }
        )
    return out


def render(
    db: str | Path,
    output: str | Path,
    refs: list[str] | None = None,
    last: int | None = None,
) -> Rendered:
    """Write the report of the selected runs (default: the latest) to ``output``."""
    started = time.perf_counter()
    check_writable(Path(output), "report")
    data = load(db, refs, last)
    latest_id = data.latest.run_id
    latest = data.cases[data.cases["run_id"] == latest_id]
    latest_rows = data.rows[(data.rows["run_id"] == latest_id) & (data.rows["status"] == "ok")]

    compared = [
        figures.energy_per_token_stacked(
            latest, modelled_domains(data.rows[data.rows["run_id"] == latest_id])
        ),
        figures.bar_by_case(
            latest, "g_per_1k_tokens", "CO2e per 1,000 tokens", "mg CO2e per 1k tokens", 1e3
        ),
        figures.bar_by_case(latest, "tokens_per_s", "Throughput", "tokens per second"),
        figures.bar_by_case(latest, "j_per_tflop", "Energy per unit of compute", "J per TFLOP"),
        figures.energy_vs_parameters(latest),
    ]
    versus = figures.reference_vs_fused(latest)
    target = figures.energy_to_target(latest)
    timelines = [
        (case_id, figures.power_timeline(group))
        for case_id, group in latest_rows.groupby("case_id", sort=False)
        if (group["phase"] != "train-to-target").all()
    ]
    trend = figures.trends(data.cases, data.runs) if len(data.runs) > 1 else None
    latest_results = [r for r in data.results if r.run_id == latest_id]
    settings = _settings(data.latest, latest_results)
    serving = _serving(data.latest, latest_results)
    divs = {
        "compared": [_div(f) for f in compared],
        "versus": _div(versus) if versus else None,
        "target": _div(target) if target else None,
        "timelines": [(case_id, _div(f)) for case_id, f in timelines],
        "trend": _div(trend) if trend else None,
    }
    count = len(divs["compared"]) + len(divs["timelines"]) + len(settings)
    count += 1 if serving and serving["front"] else 0
    count += sum(1 for k in ("versus", "target", "trend") if divs[k])
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            plotlyjs=get_plotlyjs(),
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            version=__version__,
            db=str(data.db),
            latest=data.latest,
            runs=data.runs,
            summary=_summary(data),
            cases=_case_table(latest),
            divs=divs,
            provenance=_provenance(data.runs),
            projection=_projection(data.latest, data.results),
            settings=settings,
            serving=serving,
            fmt=_fmt,
        )
    )
    path = Path(output)
    write_text(path, html, "report")
    return Rendered(path, len(html.encode()), time.perf_counter() - started, count)
