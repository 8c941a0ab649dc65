"""``carbonbench estimate``: energy and CO2e of a job before (or without) running it: from
hardware and time, from compute, or from the joules per FLOP of a stored run."""

from __future__ import annotations

import argparse
import json
import math

from rich.table import Table

from carbonbench.cli.common import (
    add_carbon_arguments,
    add_db_argument,
    make_console,
    number,
    print_table,
)
from carbonbench.energy.carbon import resolve
from carbonbench.errors import InputError

NAME = "estimate"
HELP = "project energy and CO2e from hardware and time, compute, or a run"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1, help="devices (default 1)")
    power = parser.add_mutually_exclusive_group()
    power.add_argument("--power", type=number, metavar="W", help="average watts per device")
    power.add_argument("--gpu", metavar="MODEL", help="take the power from this GPU's TDP")
    parser.add_argument("--hours", type=number, help="how long the job holds the devices")
    parser.add_argument("--flops", type=number, help="FLOPs of the job")
    parser.add_argument("--params", type=number, metavar="N", help="parameters (with --tokens)")
    parser.add_argument("--tokens", type=number, metavar="D", help="tokens (with --params)")
    parser.add_argument("--inference", action="store_true", help="2N per token instead of 6ND")
    parser.add_argument(
        "--achieved-tflops", type=number, metavar="R", help="per device, with FLOPs"
    )
    parser.add_argument("--from-run", metavar="REF", help="project from joules/FLOP of this run")
    parser.add_argument("--arch", help="architecture of --from-run whose joules/FLOP to use")
    add_db_argument(parser)
    parser.add_argument("--embodied", action="store_true", help="add manufacturing emissions")
    add_carbon_arguments(parser)
    parser.add_argument("--json", action="store_true")


def handle(args: argparse.Namespace) -> int:
    from carbonbench.analysis import estimate as est

    carbon = resolve(
        intensity=args.carbon_intensity, country=args.country, cloud=args.cloud, pue=args.pue
    )
    if args.from_run:
        if not args.arch:
            raise InputError("--from-run needs --arch: whose joules per FLOP to use")
        if args.embodied:
            raise InputError("--embodied needs devices and hours; --from-run gives energy only")
        flops, flops_source = est.job_flops(args.flops, args.params, args.tokens, args.inference)
        result = est.from_run(
            args.db,
            args.from_run,
            carbon,
            arch=args.arch,
            phase="infer" if args.inference else "train",
            flops=flops,
            flops_source=flops_source,
        )
    else:
        if args.power is None and args.gpu is None:
            raise InputError("give --power W (average per device) or --gpu MODEL")
        power_w, power_source = (
            (args.power, "given") if args.power is not None else est.gpu_power(args.gpu)
        )
        if args.hours is not None:
            if args.flops is not None or args.params is not None:
                raise InputError("give --hours, or FLOPs with --achieved-tflops, not both")
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
                raise InputError("from FLOPs, give --achieved-tflops (per device) or --hours")
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
    table = Table(title="Estimate", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()  # figures, and the method and sources in words
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
    print_table(make_console(), table)
    return 0


def _human(x: float) -> str:
    """4 significant digits, grouped thousands, no exponent below 10^12."""
    if x == 0 or 1e-3 <= abs(x) < 1e12:
        digits = max(0, 3 - math.floor(math.log10(abs(x)))) if x else 0
        return f"{x:,.{digits}f}"
    return f"{x:.4g}"
