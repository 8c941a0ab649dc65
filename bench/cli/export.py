"""``carbonbench export``: stored rows as CSV, Parquet or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from carbonbench.cli.common import add_db_argument

NAME = "export"
HELP = "write stored results as CSV, Parquet or JSON"


def configure(parser: argparse.ArgumentParser) -> None:
    from carbonbench.results.export import FORMATS

    add_db_argument(parser)
    parser.add_argument("--run", metavar="REF", help="run id, latest or latest~N (default: all)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")


def handle(args: argparse.Namespace) -> int:
    from carbonbench.results.export import write_rows
    from carbonbench.results.store import Store

    with Store(args.db, create=False, readonly=True) as store:
        run_id = store.resolve(args.run) if args.run else None
        rows = store.rows(run_id)
    write_rows(rows, args.format, args.output)
    return 0
