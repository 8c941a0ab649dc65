"""The ``carbonbench`` command: a thin layer of argument parsing over the library."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from bench import __version__
from bench.cli_run import add_run_parser
from bench.store import StoreError


def _models(args: argparse.Namespace) -> int:
    """List the architectures with their parameter counts per size (built on the meta device)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    import models

    rows = []
    for name, arch in models.ARCHITECTURES.items():
        counts = {}
        for size in arch.sizes:
            with torch.device("meta"):
                counts[size] = models.count_parameters(models.build(name, size))
        rows.append({"arch": name, "description": arch.description, "parameters": counts})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="Architectures (parameters per size)")
    table.add_column("arch", style="bold")
    for size in models.SIZES:
        table.add_column(size, justify="right")
    table.add_column("description")
    for row in rows:
        sizes = [f"{row['parameters'][s] / 1e6:.2f} M" for s in models.SIZES]
        table.add_row(row["arch"], *sizes, row["description"])
    Console().print(table)
    return 0


def _sensors(args: argparse.Namespace) -> int:
    """Each energy domain of this machine: source, method, power now, and why nothing better."""
    from bench.meter import EnergyMeter
    from bench.sensors import Diagnostic, detect_sensors

    if args.seconds <= 0:
        raise ValueError(f"--seconds must be positive, got {args.seconds}")
    detection = detect_sensors(cpu_tdp_w=args.cpu_tdp, ram_w_per_gb=args.ram_w_per_gb)
    with EnergyMeter(detection.sensors, interval_s=0.1) as meter, meter.window("sensors") as m:
        time.sleep(args.seconds)
    diagnostics = detection.diagnostics + [d for s in detection.sensors for d in s.diagnostics]
    # which diagnostics explain a domain's method: the better source that was missing
    explains = {"modelled": "rapl", "power-sampled": "nvml"}
    rows = []
    for sensor in detection.sensors:
        for domain, method in zip(sensor.domains, sensor.methods, strict=True):
            why = [
                d
                for d in diagnostics
                if d.source == explains.get(method)
                and (method == "modelled" or domain in d.problem)
            ]
            rows.append(
                {
                    "domain": domain,
                    "source": sensor.source,
                    "method": method,
                    "power_w": m.power_w[domain],
                    "added_to_total": m.additive[domain],
                    "why_not_better": [asdict(d) for d in why],
                    "constants": sensor.constants(),
                }
            )
    if not any(r["domain"].startswith("gpu:") for r in rows):
        rows.append(
            {
                "domain": "gpu",
                "source": None,
                "method": None,
                "power_w": None,
                "added_to_total": False,
                "why_not_better": [asdict(d) for d in diagnostics if d.source == "nvml"],
                "constants": {},
            }
        )
    if args.json:
        print(json.dumps({"domains": rows, "window_s": m.duration_s}, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Energy domains (power averaged over {m.duration_s:.1f} s)")
    for column in ("domain", "source", "method", "power", "notes"):
        table.add_column(column, justify="right" if column == "power" else "left")
    numbered = {str(d): n for n, d in enumerate(diagnostics, start=1)}
    for row in rows:
        refs = [f"[{numbered[str(Diagnostic(**w))]}]" for w in row["why_not_better"]]
        if row["domain"] == "cpu:modelled":
            refs.insert(
                0, f"P_max {row['constants']['p_max_w']:g} W: {row['constants']['p_max_source']}"
            )
        power = "-" if row["power_w"] is None else f"{row['power_w']:.1f} W"
        table.add_row(
            row["domain"], row["source"] or "none", row["method"] or "-", power, " ".join(refs)
        )
    console = Console()
    console.print(table)
    for text, n in numbered.items():
        console.print(f"[{n}] {text}", markup=False, highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonbench",
        description="Measure the energy and carbon emissions of neural-network architectures.",
    )
    parser.add_argument("--version", action="version", version=f"carbonbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("models", help="list the reference architectures and sizes")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_models)
    sensors = commands.add_parser(
        "sensors", help="show how each energy domain of this machine is measured, and why"
    )
    sensors.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sensors.add_argument(
        "--seconds", type=float, default=1.0, help="how long to average power (default 1 s)"
    )
    sensors.add_argument("--cpu-tdp", type=float, metavar="W", help="CPU TDP for the CPU model")
    sensors.add_argument(
        "--ram-w-per-gb", type=float, metavar="W", help="watts per GB for the RAM model"
    )
    sensors.set_defaults(handler=_sensors)
    add_run_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, StoreError) as error:  # bad input: one line naming it, no traceback
        print(f"carbonbench: error: {error}", file=sys.stderr)
        return 2
    except sqlite3.Error as error:
        print(f"carbonbench: error: results store: {error}", file=sys.stderr)
        return 2
