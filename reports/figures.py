"""The report's plotly figures. Each takes plain data and returns a figure; nothing here reads
the store or writes HTML."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from carbonbench.analysis.pareto import STATUSES, Group
from carbonbench.reports.data import modelled_domains
from carbonbench.results.store import RunRecord

FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
DOMAIN_COLOURS = {"gpu": "#2f6fdf", "cpu": "#e07b39", "dram": "#8a5cc2", "ram": "#8a5cc2"}
PHASE_ORDER = ["train", "infer", "prefill", "decode", "train-to-target"]
MAX_TIMELINE_POINTS = 600
# a metric's scale and axis title where its own unit reads badly (joules per token: mJ)
METRIC_AXES: dict[str, tuple[float, str]] = {
    "energy_per_token": (1e3, "mJ per token"),
    "time_per_token": (1e3, "ms per token"),
    "co2e_per_1k_tokens": (1e3, "mg CO2e per 1,000 tokens"),
    "energy_to_target": (1.0, "joules to the target loss"),
    "time_to_target": (1.0, "seconds to the target loss"),
}
STATUS_COLOURS = {
    "front": "#3b8c6e",
    "dominated-not-significantly": "#e0a239",
    "dominated": "#b0b7c3",
}


def _layout(fig: go.Figure, title: str, height: int = 380, **kwargs: Any) -> go.Figure:
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        "font": {"family": FONT, "size": 12, "color": "#1d2330"},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "legend": {"orientation": "h", "y": -0.18},
        "hoverlabel": {"font": {"family": FONT}},
    }
    fig.update_layout(**(layout | kwargs))
    return fig


def domain_kind(domain: str) -> str:
    if domain.startswith("gpu"):
        return "GPU"
    if domain.startswith("ram") or "dram" in domain:
        return "DRAM/RAM"
    return "CPU"


def _domain_colour(domain: str) -> str:
    kind = domain_kind(domain)
    return {"GPU": DOMAIN_COLOURS["gpu"], "CPU": DOMAIN_COLOURS["cpu"]}.get(kind, "#8a5cc2")


def case_label(row: pd.Series) -> str:
    return f"{row['arch']} · {row['phase']}"


def energy_per_token_stacked(cases: pd.DataFrame, modelled: set[str]) -> go.Figure:
    """Energy per 1,000 tokens by architecture x phase, stacked by domain; ``modelled``
    domains (by their stored method) hatched; the median total with its 95% interval as
    error bars."""
    ok = cases[(cases["status"] == "ok") & cases["j_per_token"].notna()].copy()
    ok["label"] = ok.apply(case_label, axis=1)
    domains = sorted({d for e in ok["j_per_token_by_domain"] for d in e})
    fig = go.Figure()
    for domain in domains:
        hatched = domain in modelled
        fig.add_bar(
            name=f"{domain} ({'modelled' if hatched else 'measured'})",
            x=ok["label"],
            y=np.array([1000 * e.get(domain, 0.0) for e in ok["j_per_token_by_domain"]]),
            marker={
                "color": _domain_colour(domain),
                "pattern": {"shape": "/" if hatched else "", "fillmode": "overlay", "size": 6},
                "opacity": 0.75 if hatched else 1.0,
            },
            hovertemplate="%{x}<br>" + domain + ": %{y:.4g} J per 1k tokens<extra></extra>",
        )
    total = 1000 * ok["j_per_token"].to_numpy()
    fig.add_scatter(
        name="total (median, 95% CI)",
        x=ok["label"],
        y=total,
        mode="markers",
        marker={"color": "#1d2330", "size": 6, "symbol": "line-ew-open"},
        error_y={
            "type": "data",
            "symmetric": False,
            # no interval (one round): NaN, no bar
            "array": 1000 * ok["j_per_token_high"].astype(float).to_numpy() - total,
            "arrayminus": total - 1000 * ok["j_per_token_low"].astype(float).to_numpy(),
            "color": "#1d2330",
            "thickness": 1.2,
            "width": 5,
        },
        hovertemplate="%{x}<br>total %{y:.4g} J per 1k tokens<extra></extra>",
    )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="joules per 1,000 tokens")
    return _layout(fig, "Energy per 1,000 tokens, by domain", height=430)


def bar_by_case(cases: pd.DataFrame, column: str, title: str, axis: str, scale: float = 1.0):
    ok = cases[(cases["status"] == "ok") & cases[column].notna()].copy()
    ok["label"] = ok.apply(case_label, axis=1)
    fig = go.Figure(
        go.Bar(
            x=ok["label"],
            y=scale * ok[column].to_numpy(dtype=float),
            marker_color="#3b8c6e",
            hovertemplate="%{x}<br>%{y:.4g} " + axis + "<extra></extra>",
        )
    )
    fig.update_yaxes(title_text=axis)
    return _layout(fig, title, height=340)


def energy_vs_parameters(cases: pd.DataFrame) -> go.Figure:
    ok = cases[(cases["status"] == "ok") & cases["params"].notna() & cases["j_per_token"].notna()]
    fig = go.Figure()
    for phase in [p for p in PHASE_ORDER if p in set(ok["phase"])]:
        part = ok[ok["phase"] == phase]
        fig.add_scatter(
            name=phase,
            x=part["params"].to_numpy(dtype=float),
            y=1000 * part["j_per_token"].to_numpy(),
            mode="markers+text",
            text=part["arch"],
            textposition="top center",
            marker={"size": 9},
            hovertemplate="%{text}: %{x:.3s} parameters, %{y:.4g} J per 1k tokens<extra></extra>",
        )
    # log axes, ticked by plotly within a decade too (dtick=1 labels powers of ten only, so a
    # suite of one size showed none), in SI units: 500k, 1M, 20M
    fig.update_xaxes(title_text="parameters", type="log", tickformat="~s")
    fig.update_yaxes(title_text="joules per 1,000 tokens", type="log", dtick="D2", tickformat="~g")
    return _layout(fig, "Energy against parameter count", height=400)


def reference_vs_fused(cases: pd.DataFrame) -> go.Figure | None:
    ok = cases[(cases["status"] == "ok") & cases["j_per_token"].notna()]
    if set(ok["impl"]) < {"reference", "fused"}:
        return None
    fig = go.Figure()
    for impl, colour in (("reference", "#b0b7c3"), ("fused", "#2f6fdf")):
        part = ok[ok["impl"] == impl]
        fig.add_bar(
            name=impl,
            x=part.apply(case_label, axis=1),
            y=1000 * part["j_per_token"].to_numpy(),
            marker_color=colour,
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="joules per 1,000 tokens")
    return _layout(fig, "Reference (from the equations) against fused kernels", height=360)


def energy_to_target(cases: pd.DataFrame) -> go.Figure | None:
    part = cases[(cases["phase"] == "train-to-target") & (cases["status"] == "ok")]
    if part.empty:
        return None
    reached = part["reached_target"].fillna(False).astype(bool)
    fig = go.Figure(
        go.Bar(
            x=part["arch"],
            y=part["energy_j"].to_numpy(dtype=float),
            marker_color=np.where(reached, "#3b8c6e", "#c0504d"),
            text=np.where(reached, "reached", "not reached"),
            textposition="outside",
            hovertemplate="%{x}: %{y:.4g} J (%{text})<extra></extra>",
        )
    )
    fig.update_yaxes(title_text="joules to the target loss")
    return _layout(fig, "Energy to reach the target loss", height=340)


def metric_axis(metric: str) -> tuple[float, str]:
    return METRIC_AXES.get(metric, (1.0, metric))


def _error_bars(intervals: list, scale: float) -> dict:
    """Plotly's asymmetric error bars from each median to its interval's ends."""
    medians = np.array([scale * i.median for i in intervals])
    return {
        "type": "data",
        "symmetric": False,
        "array": np.array([scale * i.high for i in intervals]) - medians,
        "arrayminus": medians - np.array([scale * i.low for i in intervals]),
        "thickness": 1,
        "width": 3,
    }


def pareto_front(group: Group, x: str, y: str) -> go.Figure:
    """Each setting's median y against its median x, the 95% intervals as error bars, coloured
    by status; the front joined by a line, the recommended setting starred and the default
    ringed."""
    (x_scale, x_title), (y_scale, y_title) = metric_axis(x), metric_axis(y)
    fig = go.Figure()
    front = sorted(group.front, key=lambda s: s.x.median)
    fig.add_scatter(
        name="front",
        x=[x_scale * s.x.median for s in front],
        y=[y_scale * s.y.median for s in front],
        mode="lines",
        line={"color": STATUS_COLOURS["front"], "width": 1.5, "dash": "dot"},
        hoverinfo="skip",
        showlegend=False,
    )
    for status in STATUSES:
        part = [s for s in group.settings if s.status == status]
        if not part:
            continue
        mx = np.array([x_scale * s.x.median for s in part])
        my = np.array([y_scale * s.y.median for s in part])
        fig.add_scatter(
            name=status,
            x=mx,
            y=my,
            mode="markers+text",
            text=[s.label(group.knobs) for s in part],
            textposition="top center",
            textfont={"size": 10},
            marker={"size": 9, "color": STATUS_COLOURS[status]},
            error_x=_error_bars([s.x for s in part], x_scale),
            error_y=_error_bars([s.y for s in part], y_scale),
            hovertemplate="%{text}<br>%{x:.4g} "
            + x_title
            + "<br>%{y:.4g} "
            + y_title
            + f"<extra>{status}</extra>",
        )
    for marked, name, symbol in (
        (group.recommended.setting if group.recommended else None, "recommended", "star-open"),
        (group.baseline, "default", "circle-open"),
    ):
        if marked is not None:
            fig.add_scatter(
                name=name,
                x=[x_scale * marked.x.median],
                y=[y_scale * marked.y.median],
                mode="markers",
                marker={"size": 18, "symbol": symbol, "color": "#1d2330", "line": {"width": 2}},
                hovertemplate=f"{name}: {marked.label(group.knobs)}<extra></extra>",
            )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return _layout(fig, f"{y_title.capitalize()} against {x_title}", height=420)


def power_timeline(case_rows: pd.DataFrame) -> go.Figure:
    """The case's windows laid end to end: warm-up shaded grey, measured windows tinted;
    modelled domains dotted."""
    modelled = modelled_domains(case_rows)
    fig = go.Figure()
    segments: list[tuple[str, dict[str, Any], float]] = []
    first = case_rows.iloc[0]
    rounds = case_rows["round"].nunique() > 1
    for _, row in case_rows.iterrows():  # every round warms up before its first window
        warm = (row["extra"] or {}).get("warmup")
        if warm:
            segments.append(("warm-up", warm["timeline"], warm["duration_s"]))
        name = f"r{row['round']} w{row['repeat']}" if rounds else f"window {row['repeat']}"
        segments.append((name, row["timeline"] or {}, row["duration_s"]))
    total_points = sum(len(s[1].get("t", [])) for s in segments)
    stride = max(1, int(np.ceil(total_points / MAX_TIMELINE_POINTS)))
    offset = 0.0
    xs: dict[str, list[np.ndarray]] = {}
    ys: dict[str, list[np.ndarray]] = {}
    for name, timeline, duration in segments:
        t = np.asarray(timeline.get("t", []), dtype=float)[::stride]
        for domain, watts in (timeline.get("watts") or {}).items():
            xs.setdefault(domain, []).append(offset + t)
            ys.setdefault(domain, []).append(np.asarray(watts, dtype=float)[::stride])
            xs[domain].append(np.array([np.nan]))  # break the line between windows
            ys[domain].append(np.array([np.nan]))
        fill = "rgba(140,140,140,0.18)" if name == "warm-up" else "rgba(47,111,223,0.07)"
        fig.add_vrect(
            x0=offset,
            x1=offset + duration,
            fillcolor=fill,
            line_width=0,
            layer="below",
            annotation_text=name,
            annotation_position="top left",
            annotation_font={"size": 10, "color": "#6b7280"},
        )
        offset += duration
    for domain in xs:
        fig.add_scatter(
            name=domain,
            x=np.concatenate(xs[domain]),
            y=np.concatenate(ys[domain]),
            mode="lines",
            line={
                "width": 1.5,
                "color": _domain_colour(domain),
                "dash": "dot" if domain in modelled else "solid",
            },
            connectgaps=False,
        )
    fig.update_xaxes(title_text="seconds (windows end to end)")
    fig.update_yaxes(title_text="watts", rangemode="tozero")
    return _layout(fig, f"Power: {first['case_id']}", height=300)


def trends(cases: pd.DataFrame, runs: list[RunRecord], change: float = 0.05):
    """Energy per token per case across runs. A case with enough history has its change
    points marked (``carbonbench.analysis.changes``: where it moved to a new level and stayed,
    red up, green down); a shorter one, its moves beyond ``change`` from the previous run
    (triangles)."""
    from carbonbench.analysis.changes import MIN_HISTORY, change_points

    order = {r.run_id: i for i, r in enumerate(runs)}
    meta = {r.run_id: r for r in runs}
    ok = cases[(cases["status"] == "ok") & cases["j_per_token"].notna()].copy()
    ok["order"] = ok["run_id"].map(order)
    fig = go.Figure()
    for case_id, part in ok.sort_values("order").groupby("case_id", sort=True):
        y = 1000 * part["j_per_token"].to_numpy()
        x = [meta[r].started_at for r in part["run_id"]]
        commits = [(meta[r].metadata.git_commit or "no commit")[:12] for r in part["run_id"]]
        fig.add_scatter(
            name=case_id,
            x=x,
            y=y,
            mode="lines+markers",
            marker={"size": 5},
            customdata=np.array(commits, dtype=object),
            hovertemplate="%{x}<br>commit %{customdata}<br>%{y:.4g} J per 1k tokens"
            + f"<extra>{case_id}</extra>",
        )
        if len(y) >= MIN_HISTORY:
            for c in change_points(y):
                fig.add_scatter(
                    x=[x[c.index]],
                    y=[y[c.index]],
                    mode="markers",
                    marker={
                        "size": 16,
                        "color": "rgba(0,0,0,0)",
                        "line": {"width": 2.5, "color": "#c0504d" if c.ratio > 1 else "#3b8c6e"},
                        "symbol": "diamond",
                    },
                    name="change point",
                    showlegend=False,
                    hovertemplate=f"change point {case_id}: {100 * (c.ratio - 1):+.1f}% "
                    f"(p = {c.p_value:.3g})<extra></extra>",
                )
            continue
        ratio = y[1:] / y[:-1] if len(y) > 1 else np.array([])
        for direction, colour, symbol in (
            (1, "#c0504d", "triangle-up"),
            (-1, "#3b8c6e", "triangle-down"),
        ):
            moved = np.where(direction * (ratio - 1) > change)[0] + 1
            if moved.size:
                fig.add_scatter(
                    x=[x[i] for i in moved],
                    y=y[moved],
                    mode="markers",
                    marker={"size": 12, "color": colour, "symbol": symbol},
                    showlegend=False,
                    hoverinfo="skip",
                )
    fig.update_yaxes(title_text="joules per 1,000 tokens", type="log", dtick="D2", tickformat="~g")
    fig.update_xaxes(title_text="run start")
    return _layout(
        fig,
        "Energy per 1,000 tokens across runs",
        height=460,
        legend={"orientation": "v", "font": {"size": 10}},
    )
