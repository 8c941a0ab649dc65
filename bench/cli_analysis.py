"""``carbonbench compare`` and ``estimate``: judging and projecting from stored results."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.carbon import resolve
from bench.store import DEFAULT_DB, Store


def add_carbon_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--country", metavar="ISO3", help="grid of a country, e.g. USA, FRA")
    where.add_argument("--cloud", metavar="PROVIDER:REGION", help="e.g. gcp:europe-west1")
    where.add_argument(
        "--carbon-intensity", type=float, metavar="G_PER_KWH", help="grams CO2e per kWh"
    )
    parser.add_argument("--pue", type=float, help="power usage effectiveness (default 1.0)")


def add_analysis_parsers(commands) -> None:
    gate = commands.add_parser(
        "compare", help="regression gate: compare two runs or two pytest-benchmark JSON files"
    )
    gate.add_argument("baseline", metavar="BASELINE", help="run id, latest~N, or a .json file")
    gate.add_argument("current", metavar="CURRENT", help="run id, latest, or a .json file")
    gate.add_argument("--db", type=Path, default=DEFAULT_DB)
    gate.add_argument(
        "--thresholds",
        type=Path,
        metavar="FILE",
        help="TOML with [thresholds] (default: the suite's, then pyproject.toml's)",
    )
    gate.add_argument("--markdown", type=Path, metavar="FILE", help="also write a Markdown summary")
    gate.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    gate.add_argument("--allow-hardware-mismatch", action="store_true")
    gate.add_argument(
        "--metric", action="append", help="only this metric (repeatable), e.g. flops_per_step"
    )
    gate.add_argument(
        "--all", action="store_true", help="show unchanged metrics too (the table hides them)"
    )
    gate.set_defaults(handler=compare_command)

    est = commands.add_parser(
        "estimate", help="project energy and CO2e from hardware and time, compute, or a run"
    )
    est.add_argument("--count", type=int, default=1, help="devices (default 1)")
    power = est.add_mutually_exclusive_group()
    power.add_argument("--power", type=float, metavar="W", help="average watts per device")
    power.add_argument("--gpu", metavar="MODEL", help="take the power from this GPU's TDP")
    est.add_argument("--hours", type=float, help="how long the job holds the devices")
    est.add_argument("--flops", type=float, help="FLOPs of the job")
    est.add_argument("--params", type=float, metavar="N", help="parameters (with --tokens)")
    est.add_argument("--tokens", type=float, metavar="D", help="tokens (with --params)")
    est.add_argument("--inference", action="store_true", help="2N per token instead of 6ND")
    est.add_argument("--achieved-tflops", type=float, metavar="R", help="per device, with FLOPs")
    est.add_argument("--from-run", metavar="REF", help="project from joules/FLOP of this run")
    est.add_argument("--arch", help="architecture of --from-run whose joules/FLOP to use")
    est.add_argument("--db", type=Path, default=DEFAULT_DB)
    est.add_argument("--embodied", action="store_true", help="add manufacturing emissions")
    add_carbon_arguments(est)
    est.add_argument("--json", action="store_true")
    est.set_defaults(handler=estimate_command)


def compare_command(args: argparse.Namespace) -> int:
    from bench.compare import ALPHA, compare, load_side, load_thresholds, markdown

    current = load_side(args.current, args.db)
    result = compare(
        load_side(args.baseline, args.db),
        current,
        load_thresholds(args.thresholds, suite_text=current.suite_text),
        allow_hardware_mismatch=args.allow_hardware_mismatch,
        **({"metrics": args.metric} if args.metric else {}),
    )
    if args.markdown:
        args.markdown.write_text(markdown(result))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        console = Console()
        table = Table(title=f"{result.baseline} → {result.current}")
        for column in ("case", "metric", "baseline", "current", "change", "p", "verdict"):
            table.add_column(column, justify="right" if column in ("change", "p") else "left")
        style = {"regression": "bold red", "improvement": "green", "no data": "yellow"}
        for v in result.verdicts:
            if v.verdict == "unchanged" and not args.all:
                continue
            table.add_row(
                v.case_id,
                v.metric,
                f"{v.baseline:.4g}" if v.baseline is not None else "",
                f"{v.current:.4g}" if v.current is not None else "",
                f"{100 * (v.ratio - 1):+.1f}%" if v.ratio is not None else "",
                f"{v.p_value:.3g}" if v.p_value is not None else "",
                f"[{style.get(v.verdict, '')}]{v.verdict}" if v.verdict in style else v.verdict,
            )
        if table.row_count:
            console.print(table)
        unchanged = sum(v.verdict == "unchanged" for v in result.verdicts)
        console.print(
            f"{len(result.regressions)} regression(s), {unchanged} unchanged metric(s) of "
            f"{len(result.verdicts)}; regression: ratio of medians beyond the threshold t and "
            f"one-sided Mann-Whitney U against the baseline x (1 + t), p <= {ALPHA}",
            highlight=False,
        )
        for case, error in result.failed.items():
            console.print(f"[bold red]failing now[/] {case}: {error}", highlight=False)
        for case in result.only_baseline:
            console.print(f"only in the baseline: {case}", highlight=False)
        for case in result.only_current:
            console.print(f"only in the current run: {case}", highlight=False)
        for note in result.notes:
            console.print(f"[yellow]note[/] {note}", highlight=False)
    return 0 if result.passed else 1


def estimate_command(args: argparse.Namespace) -> int:
    from bench import estimate as est

    carbon = resolve(
        intensity=args.carbon_intensity, country=args.country, cloud=args.cloud, pue=args.pue
    )
    if args.from_run:
        if not args.arch:
            raise ValueError("--from-run needs --arch: whose joules per FLOP to use")
        if args.embodied:
            raise ValueError("--embodied needs devices and hours; --from-run gives energy only")
        flops, flops_source = est.job_flops(args.flops, args.params, args.tokens, args.inference)
        phase = "infer" if args.inference else "train"
        with Store(args.db, create=False) as store:
            run_id = store.resolve(args.from_run)
            rows = [
                r
                for r in store.rows(run_id)
                if r["arch"] == args.arch
                and r["phase"] == phase
                and r["status"] == "ok"
                and r["flops"] > 0
            ]
        if not rows:
            raise ValueError(f"run {run_id} has no measured {args.arch} {phase} windows")
        first = rows[0]
        rows = [r for r in rows if (r["device"], r["dtype"]) == (first["device"], first["dtype"])]
        result = est.from_measurement(
            carbon,
            joules_per_flop=[r["energy_j"] / r["flops"] for r in rows],
            flops=flops,
            flops_source=flops_source,
            run=run_id,
            arch=args.arch,
            device=first["device"],
            dtype=first["dtype"],
        )
    else:
        if args.power is None and args.gpu is None:
            raise ValueError("give --power W (average per device) or --gpu MODEL")
        power_w, power_source = (
            (args.power, "given") if args.power is not None else est.gpu_power(args.gpu)
        )
        if args.hours is not None:
            if args.flops is not None or args.params is not None:
                raise ValueError("give --hours, or FLOPs with --achieved-tflops, not both")
            result = est.from_hardware(
                carbon,
                count=args.count,
                power_w=power_w,
                hours=args.hours,
                power_source=power_source,
                with_embodied=args.embodied,
            )
        else:
            flops, flops_source = est.job_flops(
                args.flops, args.params, args.tokens, args.inference
            )
            if args.achieved_tflops is None:
                raise ValueError("from FLOPs, give --achieved-tflops (per device) or --hours")
            result = est.from_compute(
                carbon,
                flops=flops,
                flops_source=flops_source,
                achieved_tflops=args.achieved_tflops,
                count=args.count,
                power_w=power_w,
                power_source=power_source,
                with_embodied=args.embodied,
            )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    console = Console()
    table = Table(title="Estimate", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rng = result.energy_kwh_range
    energy = f"{_human(result.energy_kwh)} kWh"
    if rng:
        energy += f" (95%: {_human(rng[0])} to {_human(rng[1])})"
    table.add_row("energy", energy)
    table.add_row("emissions", f"{_human(result.co2e_kg)} kg CO2e")
    if result.embodied_co2e_kg is not None:
        table.add_row("embodied", f"{_human(result.embodied_co2e_kg)} kg CO2e")
        table.add_row("total", f"{_human(result.total_co2e_kg)} kg CO2e")
    if result.hours is not None:
        table.add_row("hours", _human(result.hours))
    table.add_row("method", result.method)
    for key, value in result.inputs.items():
        table.add_row(f"input: {key}", f"{value:,.6g}" if isinstance(value, float) else str(value))
    for key, value in result.sources.items():
        table.add_row(f"source: {key}", value)
    console.print(table)
    return 0


def _human(x: float) -> str:
    """4 significant digits, grouped thousands, no exponent below 10^12."""
    if x == 0 or 1e-3 <= abs(x) < 1e12:
        digits = max(0, 3 - math.floor(math.log10(abs(x)))) if x else 0
        return f"{x:,.{digits}f}"
    return f"{x:.4g}"
