"""``carbonbench changes``: change points in the store's nightly history, per case and metric
(E-divisive means with a permutation test; see ``carbonbench.analysis.changes``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from carbonbench.cli.common import add_db_argument, make_console, number, print_table
from carbonbench.errors import InputError

NAME = "changes"
HELP = "find where each case's history moved to a new level (change points)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_db_argument(parser)
    parser.add_argument("--last", type=int, metavar="N", help="only the last N runs")
    parser.add_argument(
        "--metric", default="energy_per_token", help="energy_per_token (default), time_per_token"
    )
    parser.add_argument("--alpha", type=number, default=0.01, help="significance (default 0.01)")
    parser.add_argument(
        "--min-change", type=number, default=0.05, help="smallest move reported (default 5%%)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def handle(args: argparse.Namespace) -> int:
    from rich.table import Table

    from carbonbench.analysis.changes import MIN_HISTORY, find_changes
    from carbonbench.results.metrics import STATISTICAL
    from carbonbench.results.store import Store

    if args.metric not in STATISTICAL:
        raise InputError(f"unknown metric {args.metric!r}; valid: {', '.join(STATISTICAL)}")
    if args.last is not None and args.last < 2:
        raise InputError(f"--last must be at least 2, got {args.last}")
    if not 0 < args.alpha < 1 or args.min_change < 0:
        raise InputError("--alpha must be in (0, 1) and --min-change >= 0")
    with Store(args.db, create=False, readonly=True) as store:
        runs = store.runs()[-args.last :] if args.last else store.runs()
        changes, short = find_changes(
            runs, store.rows, args.metric, alpha=args.alpha, min_change=args.min_change
        )
    if args.json:
        print(json.dumps({"changes": [asdict(c) for c in changes], "short": short}, indent=2))
        return 0
    console = make_console()
    if changes:
        table = Table(title=f"Change points in {args.metric} ({args.db})")
        for column in ("case", "first run at the new level", "before", "after", "change", "p"):
            justify = "right" if column in ("change", "p") else "left"
            table.add_column(column, justify=justify, no_wrap=True)
        for c in changes:
            table.add_row(
                c.case_id,
                c.run_id,
                f"{c.before:.4g}",
                f"{c.after:.4g}",
                f"{100 * (c.ratio - 1):+.1f}%",
                f"{c.p_value:.3g}",
            )
        print_table(console, table)
    else:
        console.print(f"no change points in {args.metric}", highlight=False)
    if short:
        console.print(
            f"{len(short)} case(s) have fewer than {MIN_HISTORY} comparable runs: not searched",
            highlight=False,
        )
    return 0
