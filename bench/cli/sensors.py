"""``carbonbench sensors``: how each energy domain of this machine is measured, its power
now, and why nothing better."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from carbonbench.cli.common import make_console, number, print_table
from carbonbench.errors import InputError

NAME = "sensors"
HELP = "show how each energy domain of this machine is measured, and why"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--seconds", type=number, default=1.0, help="how long to average power (default 1 s)"
    )
    parser.add_argument("--cpu-tdp", type=number, metavar="W", help="CPU TDP for the CPU model")
    parser.add_argument(
        "--ram-w-per-gb", type=number, metavar="W", help="watts per GB for the RAM model"
    )


def handle(args: argparse.Namespace) -> int:
    from carbonbench.energy.meter import EnergyMeter
    from carbonbench.energy.sensors import SensorOptions, detect_sensors
    from carbonbench.energy.sensors.diagnosis import diagnose

    if not args.seconds > 0:
        raise InputError(f"--seconds must be positive, got {args.seconds}")
    options = SensorOptions(cpu_tdp_w=args.cpu_tdp, ram_w_per_gb=args.ram_w_per_gb)
    detection = detect_sensors(options)
    with EnergyMeter(detection.sensors, interval_s=0.1) as meter, meter.window("sensors") as m:
        time.sleep(args.seconds)
    reports, diagnostics = diagnose(detection, m.power_w)
    if args.json:
        rows = [
            {
                "domain": r.domain,
                "component": r.component,
                "source": r.source,
                "method": r.method,
                "power_w": r.power_w,
                "added_to_total": r.added_to_total,
                "basis": r.basis,
                "why_not_better": [asdict(d) for d in r.why_not_better],
                "constants": r.constants,
            }
            for r in reports
        ]
        print(json.dumps({"domains": rows, "window_s": m.duration_s}, indent=2, default=str))
        return 0
    from rich.table import Table

    table = Table(title=f"Energy domains (power averaged over {m.duration_s:.1f} s)")
    for column in ("domain", "source", "method", "power", "notes"):
        justify = "right" if column == "power" else "left"
        table.add_column(column, justify=justify, no_wrap=column != "notes")
    numbered = {str(d): n for n, d in enumerate(dict.fromkeys(map(str, diagnostics)), start=1)}
    for r in reports:
        notes = ([r.basis] if r.basis else []) + [f"[{numbered[str(d)]}]" for d in r.why_not_better]
        power = "-" if r.power_w is None else f"{r.power_w:.1f} W"
        table.add_row(r.domain, r.source or "none", r.method or "-", power, " ".join(notes))
    console = make_console()
    print_table(console, table)
    for text, n in numbered.items():
        console.print(f"[{n}] {text}", markup=False, highlight=False)
    return 0
