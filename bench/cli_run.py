"""``carbonbench run``, ``runs`` and ``export``: the suite from the command line, and its data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from bench.carbon import resolve
from bench.cli_analysis import add_analysis_parsers, add_carbon_arguments
from bench.store import DEFAULT_DB, JSON_COLUMNS, Store

FILTERS = ("arch", "phase", "size", "device", "impl", "dtype")  # narrow a suite's matrix


def add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="run a benchmark suite and store its results")
    run.add_argument("--suite", help="built-in name (smoke, gpu, nightly) or path (default: smoke)")
    for name in FILTERS:
        run.add_argument(
            f"--{name}",
            action="append",
            metavar=name.upper(),
            help=f"only cases with this {name} (repeatable)",
        )
    run.add_argument("--label", help="free text stored with the run (e.g. a PR number)")
    run.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"results store ({DEFAULT_DB})")
    run.add_argument("--corpus", help="train on this text file (byte-level tokens, vocab 256)")
    run.add_argument("--cpu-tdp", type=float, metavar="W", help="CPU TDP for the CPU model")
    add_carbon_arguments(run)
    run.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with DistributedDataParallel over N processes on this host",
    )
    run.add_argument(
        "--resume",
        metavar="REF",
        help="add the cases a stopped run (id, latest, latest~N) has no rows for, with its "
        "suite, filters, label and carbon settings",
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(handler=run_command)

    runs = commands.add_parser("runs", help="list the runs in the results store")
    runs.add_argument("--db", type=Path, default=DEFAULT_DB)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=runs_command)

    report = commands.add_parser("report", help="write the HTML report of stored runs")
    report.add_argument("--db", type=Path, default=DEFAULT_DB)
    which = report.add_mutually_exclusive_group()
    which.add_argument("--run", action="append", metavar="REF", help="run id, latest, latest~N")
    which.add_argument("--last", type=int, metavar="N", help="the last N runs (default 1)")
    report.add_argument("-o", "--output", type=Path, default=Path("carbonbench-report.html"))
    report.set_defaults(handler=report_command)

    export = commands.add_parser("export", help="write stored results as CSV, Parquet or JSON")
    export.add_argument("--db", type=Path, default=DEFAULT_DB)
    export.add_argument("--run", metavar="REF", help="run id, latest or latest~N (default: all)")
    export.add_argument("--format", choices=["csv", "parquet", "json"], required=True)
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    export.set_defaults(handler=export_command)

    add_analysis_parsers(commands)


class WattsColumn(ProgressColumn):
    """Live power from the meter's last sample, summed over the domains that add up."""

    def __init__(self, meter) -> None:
        super().__init__()
        self.meter = meter

    def render(self, task) -> Text:
        power = self.meter.latest_power()
        total = sum(w for d, w in power.items() if self.meter.additive[d])
        return Text(f"{total:7.1f} W", style="bold yellow")


def run_command(args: argparse.Namespace) -> int:
    from bench.meter import EnergyMeter
    from bench.runner import Runner, RunOptions
    from bench.sensors import detect_sensors
    from bench.suite import load, narrow

    if args.resume is not None:
        suite, carbon, options = _resumed(args)
    else:
        filters = {name: getattr(args, name) for name in FILTERS if getattr(args, name)}
        suite = narrow(load(args.suite or "smoke"), **filters)
        if not suite.cases:
            raise ValueError(f"no case of suite {suite.name!r} matches the filters given")
        c = suite.carbon
        given = args.carbon_intensity is not None or args.country or args.cloud
        carbon = resolve(
            intensity=args.carbon_intensity if given else c.intensity,
            country=args.country if given else c.country,
            cloud=args.cloud if given else c.cloud,
            pue=args.pue if args.pue is not None else c.pue,
        )
        options = RunOptions(
            label=args.label, corpus=args.corpus, cpu_tdp_w=args.cpu_tdp, filters=filters
        )
    console = Console(stderr=args.json)
    from bench.distributed import launch, run_rank, topology_from_env, training_only

    topology = topology_from_env()
    if options.resume is not None and topology is not None:
        raise ValueError("--resume takes single-process runs, not a torchrun job")
    if args.nproc is not None or topology is not None:
        from bench.runner import JobFailed, RunOptions

        suite = training_only(suite)
        if not suite.cases:
            raise ValueError(f"suite {suite.name!r} has no train case to run distributed")
        try:
            if topology is not None:  # under torchrun: this is one rank
                run_id, _ = run_rank(
                    suite, str(args.db), carbon, options, cpu_tdp_w=options.cpu_tdp_w
                )
                if topology.rank != 0:
                    return 0
            else:
                run_id = launch(args.nproc, suite, str(args.db), carbon, options, options.cpu_tdp_w)
        except JobFailed as error:  # one line; the rows finished before it are stored
            print(f"carbonbench: error: {error}; finished rows are in {args.db}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"carbonbench: stopped; finished rows are in {args.db}", file=sys.stderr)
            return 130
        return _print_stored(console, args, run_id, carbon)
    store = Store(args.db)
    uses_gpu = any(case.device.startswith("cuda") for case in suite.cases)
    detection = detect_sensors(gpu=uses_gpu, cpu_tdp_w=options.cpu_tdp_w)
    for diagnostic in detection.diagnostics:
        console.print(f"[yellow]note[/] {diagnostic}", highlight=False)
    with EnergyMeter(detection.sensors, suite.measure.interval_s) as meter:
        meter.diagnostics = detection.diagnostics
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            WattsColumn(meter),
            console=console,
            transient=False,
        )
        task = progress.add_task("starting", total=len(suite.cases))

        def on_event(kind: str, info: dict[str, Any]) -> None:
            if kind == "idle":
                progress.update(task, description=f"idle baseline {info['seconds']:g} s")
            elif kind == "case":
                progress.update(task, completed=info["index"], description=info["case"].case_id)
            elif kind == "row" and info["row"].status == "failed":
                row = info["row"]
                progress.console.print(f"[red]failed[/] {row.case_id}: {row.error}")

        runner = Runner(suite, store, meter, carbon, options, on_event)
        with progress:
            status = runner.run()
            progress.update(task, completed=len(suite.cases), description="done")
    if options.resume is not None:  # the whole run, the rows from before too
        store.close()
        return _print_stored(console, args, runner.run_id, carbon)
    result = {
        "run_id": runner.run_id,
        "status": status,
        "db": str(store.path),
        "cases": _cases(runner.rows),
    }
    store.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(console, result, carbon)
    return 0 if status == "ok" else 1


def _resumed(args: argparse.Namespace):
    """(suite, carbon, options) to finish a stopped run: its cases without rows, measured
    as it was (suite, filters, label, carbon settings) on the same machine."""
    from bench.carbon import CarbonSettings, Intensity
    from bench.runner import RunOptions, run_hardware
    from bench.suite import narrow, parse

    names = ("suite", *FILTERS, "label", "nproc", "corpus", "cpu_tdp")
    mixed = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n)]
    mixed += ["carbon options"] * any(
        getattr(args, n) is not None for n in ("carbon_intensity", "country", "cloud", "pue")
    )
    if mixed:
        raise ValueError(
            f"--resume measures as the run did: drop {', '.join(mixed)} (a new run takes them)"
        )
    with Store(args.db, create=False) as store:
        run_id = store.resolve(args.resume)
        run = store.run(run_id)
        done = {r["case_id"] for r in store.rows(run_id)}
    meta = run["metadata"]
    if run["status"] == "running" and _alive(meta):
        pid = (meta.get("process") or {}).get("pid")
        raise ValueError(f"run {run_id} is still running (process {pid} on {meta.get('host')})")
    if (meta.get("world_size") or 1) > 1:
        raise ValueError(f"run {run_id} was distributed: --resume takes single-process runs")
    here = run_hardware()
    then = {k: meta.get(k) for k in here}
    if here != then:
        raise ValueError(f"run {run_id} ran on other hardware ({then}); this is {here}")
    suite = narrow(parse(run["suite_text"], run["suite_source"]), **meta.get("filters", {}))
    suite = dataclasses.replace(suite, cases=tuple(c for c in suite.cases if c.case_id not in done))
    if not suite.cases:
        raise ValueError(f"run {run_id} has rows for every case: nothing to resume")
    c = meta["carbon"]
    intensity = Intensity(c["intensity_g_per_kwh"], c["source"], c["year"], c["region"])
    carbon = CarbonSettings(intensity, c["pue"], c["pue_source"])
    stored = meta.get("options") or {}
    options = RunOptions(
        label=run["label"],
        corpus=stored.get("corpus"),
        seed=stored.get("seed", 0),
        cpu_tdp_w=stored.get("cpu_tdp_w"),
        filters=meta.get("filters", {}),
        resume=run_id,
    )
    return suite, carbon, options


def _alive(meta: dict[str, Any]) -> bool:
    """Whether the process that wrote a run marked running may still be at it."""
    import socket

    import psutil

    recorded = meta.get("process") or {}
    if meta.get("host") != socket.gethostname() or "pid" not in recorded:
        return True  # another machine's, or of unknown process: assume so
    try:
        process = psutil.Process(recorded["pid"])
    except psutil.NoSuchProcess:
        return False
    return process.pid != os.getpid() and process.create_time() <= recorded["started"]


def _print_stored(console: Console, args: argparse.Namespace, run_id: str, carbon) -> int:
    """The summary of a run from its stored rows (a distributed run's rank 0 wrote them)."""
    with Store(args.db, create=False) as store:
        rows = store.rows(run_id)
        status = store.run(run_id)["status"]
    result = {"run_id": run_id, "status": status, "db": str(args.db), "cases": _cases(rows)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(console, result, carbon)
    return 0 if status == "ok" else 1


def _cases(rows) -> list[dict[str, Any]]:
    from bench.summary import summarise

    return [dataclasses.asdict(case) for case in summarise(rows)]


def _print_summary(console: Console, result: dict[str, Any], carbon) -> None:
    table = Table(title=f"run {result['run_id']} ({result['status']})")
    columns = ("arch", "phase", "mJ/token", "95% CI", "mgCO2e/1k tok", "tokens/s", "method")
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("arch", "phase", "method") else "right"
        )
    for case in result["cases"]:
        if case["status"] != "ok":
            table.add_row(
                case["arch"], case["phase"], "[red]failed", "", "", "", case["error"] or ""
            )
            continue
        low, high = case["j_per_token_ci"]
        table.add_row(
            case["arch"],
            case["phase"],
            f"{1e3 * case['j_per_token']:.3g}",
            f"{1e3 * low:.3g} to {1e3 * high:.3g}",
            f"{1e3 * case['g_co2e_per_1k_tokens']:.3g}",
            f"{case['tokens_per_s']:,.0f}",
            ", ".join(case["methods"]),
        )
    console.print(table)
    console.print(
        f"carbon intensity {carbon.intensity.g_per_kwh:g} g/kWh ({carbon.intensity.source}), "
        f"PUE {carbon.pue:g}",
        highlight=False,
    )
    console.print(f"run id [bold]{result['run_id']}[/] stored in {result['db']}")


def report_command(args: argparse.Namespace) -> int:
    from reports.html import render

    if args.last is not None and args.last < 1:
        raise ValueError(f"--last must be at least 1, got {args.last}")
    rendered = render(args.db, args.output, args.run, args.last)
    Console(stderr=True).print(
        f"report written: {rendered.path} ({rendered.bytes / 1e6:.1f} MB, "
        f"{rendered.figures} figures, {rendered.seconds:.1f} s)",
        highlight=False,
    )
    print(rendered.path)
    return 0


def runs_command(args: argparse.Namespace) -> int:
    with Store(args.db, create=False) as store:
        runs = store.runs()
        counts = {
            r["run_id"]: r["n"]
            for r in store.db.execute("SELECT run_id, COUNT(*) AS n FROM results GROUP BY run_id")
        }
    rows = [
        {k: r[k] for k in ("run_id", "label", "suite_name", "status", "started_at", "ended_at")}
        | {"rows": counts.get(r["run_id"], 0)}
        for r in runs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=str(args.db))
    for column in ("ref", "run id", "suite", "label", "status", "started", "rows"):
        table.add_column(column)
    for back, row in enumerate(reversed(rows)):
        ref = "latest" if back == 0 else f"latest~{back}"
        table.add_row(
            ref,
            row["run_id"],
            row["suite_name"],
            row["label"] or "",
            row["status"],
            row["started_at"],
            str(row["rows"]),
        )
    Console().print(table)
    return 0


def export_command(args: argparse.Namespace) -> int:
    import pandas as pd

    with Store(args.db, create=False) as store:
        run_id = store.resolve(args.run) if args.run else None
        rows = store.rows(run_id)
    if args.format == "json":
        text = json.dumps(rows, indent=1)
        if args.output:
            args.output.write_text(text)
        else:
            print(text)
        return 0
    frame = pd.DataFrame(rows)
    for column in JSON_COLUMNS:
        if column in frame:
            frame[column] = frame[column].map(json.dumps)
    if args.format == "csv":
        frame.to_csv(args.output or sys.stdout, index=False)
    else:
        if args.output is None:
            frame.to_parquet(sys.stdout.buffer, index=False)
        else:
            frame.to_parquet(args.output, index=False)
    return 0
