"""``carbonbench export``: stored rows as CSV, Parquet or JSON, or a run's per-case totals as
Prometheus metrics (``openmetrics``; ``prometheus``, the text format of node_exporter's textfile
collector)."""

from __future__ import annotations

import argparse
from pathlib import Path

from carbonbench.cli.common import add_db_argument

NAME = "export"
HELP = "write stored results as CSV, Parquet or JSON, or as Prometheus metrics"
METRICS = ("openmetrics", "prometheus")  # one run's per-case totals


def configure(parser: argparse.ArgumentParser) -> None:
    from carbonbench.results.export import FORMATS

    add_db_argument(parser)
    parser.add_argument(
        "--run",
        metavar="REF",
        help="run id, latest or latest~N (default: all; metrics: latest)",
    )
    parser.add_argument("--format", choices=(*FORMATS, *METRICS), required=True)
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")


def handle(args: argparse.Namespace) -> int:
    from carbonbench.results.export import write_rows
    from carbonbench.results.store import Store

    if args.format in METRICS:  # a snapshot of one run, as Prometheus scrapes it
        from carbonbench.integrations.prometheus import write_metrics

        write_metrics(args.db, args.run or "latest", args.format, args.output)
        return 0
    with Store(args.db, create=False, readonly=True) as store:
        run_id = store.resolve(args.run) if args.run else None
        rows = store.rows(run_id)
    write_rows(rows, args.format, args.output)
    return 0
