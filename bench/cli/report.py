"""``carbonbench report``: stored runs as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from carbonbench.cli.common import add_db_argument, make_console
from carbonbench.errors import InputError

NAME = "report"
HELP = "write the HTML report of stored runs"


def configure(parser: argparse.ArgumentParser) -> None:
    add_db_argument(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", action="append", metavar="REF", help="run id, latest, latest~N")
    which.add_argument("--last", type=int, metavar="N", help="the last N runs (default 1)")
    parser.add_argument("-o", "--output", type=Path, default=Path("carbonbench-report.html"))


def handle(args: argparse.Namespace) -> int:
    from carbonbench.reports.html import render

    if args.last is not None and args.last < 1:
        raise InputError(f"--last must be at least 1, got {args.last}")
    rendered = render(args.db, args.output, args.run, args.last)
    make_console(stderr=True).print(
        f"report written: {rendered.path} ({rendered.bytes / 1e6:.1f} MB, "
        f"{rendered.figures} figures, {rendered.seconds:.1f} s)",
        highlight=False,
    )
    print(rendered.path)
    return 0
