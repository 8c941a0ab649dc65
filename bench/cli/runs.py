"""``carbonbench runs``: what the store holds, newest first, with the references to name
them by (latest, latest~1, ...)."""

from __future__ import annotations

import argparse
import json

from carbonbench.cli.common import add_db_argument, make_console, print_table

NAME = "runs"
HELP = "list the runs in the results store"


def configure(parser: argparse.ArgumentParser) -> None:
    add_db_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def handle(args: argparse.Namespace) -> int:
    from rich.table import Table

    from carbonbench.results.store import Store

    with Store(args.db, create=False, readonly=True) as store:
        runs = store.runs()
        counts = store.row_counts()
    rows = [
        {
            "run_id": r.run_id,
            "label": r.label,
            "suite_name": r.suite_name,
            "status": r.status,
            "started_at": r.started_at,
            "ended_at": r.ended_at,
            "rows": counts.get(r.run_id, 0),
        }
        for r in runs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{args.db} holds no runs yet")
        return 0
    table = Table(title=str(args.db))
    for column in ("ref", "run id", "suite", "label", "status", "started", "rows"):
        # whole, labels aside: runs started in the same minute differ at the end of their ids
        table.add_column(column, no_wrap=column != "label")
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
    print_table(make_console(), table)
    return 0
