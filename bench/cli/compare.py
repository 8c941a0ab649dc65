"""``carbonbench compare``: the regression gate between two runs, or two pytest-benchmark
JSON files. Exit 0 pass, 1 a regression (or a case failing now), 2 unusable input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carbonbench.cli.common import add_db_argument, fraction, make_console, print_table

NAME = "compare"
HELP = "regression gate: compare two runs or two pytest-benchmark JSON files"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE", help="run id, latest~N, or a .json file")
    parser.add_argument("current", metavar="CURRENT", help="run id, latest, or a .json file")
    add_db_argument(parser)
    parser.add_argument(
        "--thresholds",
        type=Path,
        metavar="FILE",
        help="TOML with [thresholds] (default: the suite's, then pyproject.toml's)",
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write a Markdown summary"
    )
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument("--allow-hardware-mismatch", action="store_true")
    parser.add_argument(
        "--metric", action="append", help="only this metric (repeatable), e.g. flops_per_step"
    )
    parser.add_argument(
        "--all", action="store_true", help="show unchanged metrics too (the table hides them)"
    )
    parser.add_argument(
        "--unknown-noise",
        type=fraction,
        metavar="F",
        help="with fewer than 3 earlier comparable runs in the store, only changes beyond this "
        "fraction can be regressions (default 0.3)",
    )


def handle(args: argparse.Namespace) -> int:
    from carbonbench.analysis.compare import compare, load_side, load_thresholds, markdown
    from carbonbench.results.outputs import check_writable, write_text

    if args.markdown:
        check_writable(args.markdown, "Markdown summary")
    baseline = load_side(args.baseline, args.db)
    current = load_side(args.current, args.db)
    result = compare(
        baseline,
        current,
        load_thresholds(args.thresholds, suite_text=current.suite_text),
        allow_hardware_mismatch=args.allow_hardware_mismatch,
        **({} if args.unknown_noise is None else {"unknown_noise": args.unknown_noise}),
        **({"metrics": args.metric} if args.metric else {}),
    )
    if args.markdown:
        write_text(args.markdown, markdown(result), "Markdown summary")
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_comparison(make_console(), result, show_all=args.all)
    return 0 if result.passed else 1


def print_comparison(console: Console, result, *, show_all: bool, method: str | None = None):
    """The verdicts as a table (unchanged ones only with ``show_all``), then what else to know."""
    from carbonbench.analysis.compare import METHOD, change_text, evidence

    table = Table(title=f"{result.baseline} → {result.current}")
    columns = ("case", "metric", "baseline", "current", "change [interval]", "p", "evidence")
    for column in (*columns, "verdict"):
        table.add_column(
            column,
            justify="right" if column in columns[4:6] else "left",
            no_wrap=column != "evidence",
        )
    style = {
        "regression": "bold red",
        "improvement": "green",
        "no data": "yellow",
        "inconclusive": "yellow",
    }
    for v in result.verdicts:
        if v.verdict == "unchanged" and not show_all:
            continue
        table.add_row(
            v.case_id,
            v.metric,
            f"{v.baseline:.4g}" if v.baseline is not None else "",
            f"{v.current:.4g}" if v.current is not None else "",
            change_text(v),
            f"{v.p_value:.3g}" if v.p_value is not None else "",
            evidence(v),
            f"[{style[v.verdict]}]{v.verdict}" if v.verdict in style else v.verdict,
        )
    if table.row_count:
        print_table(console, table)
    unchanged = sum(v.verdict == "unchanged" for v in result.verdicts)
    console.print(
        f"{len(result.regressions)} regression(s), {unchanged} unchanged metric(s) of "
        f"{len(result.verdicts)}. {method or METHOD}",
        highlight=False,
    )
    for case, error in result.failed.items():
        console.print(f"[bold red]failing now[/] {case}: {error}", highlight=False)
    for case in result.only_baseline:
        console.print(f"only in the baseline: {case}", highlight=False)
    for case in result.only_current:
        console.print(f"only in the current run: {case}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
