"""``carbonbench measure -- CMD ARGS...``: any command, measured for its lifetime and stored
as a run. Its output passes through untouched (carbonbench's summary goes to standard
error); its exit status is carbonbench's."""

from __future__ import annotations

import argparse

from carbonbench.cli.common import (
    add_carbon_arguments,
    add_db_argument,
    make_console,
    number,
    print_table,
)
from carbonbench.errors import InputError

NAME = "measure"
HELP = "measure any command for its lifetime and store it as a run"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", help="the name the run and its case take (default: CMD)")
    add_db_argument(parser)
    parser.add_argument("--work", type=number, metavar="N", help="units of work the command does")
    parser.add_argument("--unit", default="unit", help="what --work counts (e.g. token, image)")
    parser.add_argument(
        "--interval", type=number, default=0.1, metavar="S", help="sampling interval (0.1 s)"
    )
    add_carbon_arguments(parser)
    parser.add_argument(
        "--pushgateway",
        metavar="URL",
        help="push the run's metrics to this Prometheus Pushgateway (the prometheus extra)",
    )
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="log the figures to the active MLflow run (MLFLOW_RUN_ID), or a new one named "
        "after the label, at MLFLOW_TRACKING_URI (the mlflow extra)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")


def handle(args: argparse.Namespace) -> int:
    from rich.table import Table

    from carbonbench.energy.carbon import resolve
    from carbonbench.integrations.tracking import run_command

    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise InputError("give the command to measure after --: carbonbench measure -- CMD ARGS")
    if args.work is not None and not args.work > 0:
        raise InputError(f"--work must be positive, got {args.work:g}")
    if args.pushgateway is not None:
        from carbonbench.integrations.prometheus import check_gateway

        check_gateway(args.pushgateway)  # refused before the command runs, not after
    if args.mlflow:
        from carbonbench.integrations.mlflow import require_mlflow

        require_mlflow()
    carbon = resolve(
        intensity=args.carbon_intensity, country=args.country, cloud=args.cloud, pue=args.pue
    )
    try:
        status, tracker = run_command(
            argv,
            label=args.label,
            db=args.db,
            work=args.work,
            unit=args.unit,
            carbon=carbon,
            interval_s=args.interval,
        )
    except FileNotFoundError:
        raise InputError(f"no command {argv[0]!r}: check its name and PATH") from None
    except PermissionError:
        raise InputError(f"cannot run {argv[0]!r}: permission denied") from None
    m = tracker.measurement
    assert m is not None
    console = make_console(stderr=True)
    table = Table(title=f"{tracker.label}: {m.duration_s:.1f} s, exit status {status}")
    for column in ("domain", "method", "energy", "mean power"):
        justify = "left" if column in ("domain", "method") else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    for domain, joules in m.energy_j.items():
        added = "" if m.additive[domain] else " (not added)"
        table.add_row(
            domain, m.method[domain] + added, f"{joules:,.1f} J", f"{m.power_w[domain]:.1f} W"
        )
    print_table(console, table)
    total = m.total_energy_j
    line = f"total {total:,.1f} J, {carbon.co2e_g(total):.3g} g CO2e at {carbon.describe()}"
    if args.work:
        per_unit = f"{total / args.work:.4g} J and {carbon.co2e_g(total) / args.work:.3g} g"
        line += f"; {per_unit} per {args.unit}"
    console.print(line, highlight=False)
    if tracker.run_id is not None:
        console.print(f"run id [bold]{tracker.run_id}[/] stored in {args.db}")
        if args.pushgateway is not None:
            from carbonbench.integrations.prometheus import push_or_warn

            push_or_warn(args.pushgateway, args.db, tracker.run_id)
    if args.mlflow:
        from carbonbench.integrations.mlflow import MlflowLogError, log_tracker

        try:
            console.print(f"MLflow run {log_tracker(tracker)}", highlight=False)
        except MlflowLogError as error:  # the exit status stays the command's
            warning = f"carbonbench: warning: {error}; it is stored in {args.db}"
            console.print(warning, highlight=False, markup=False)
    return status
