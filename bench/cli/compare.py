"""``carbonbench compare``: the regression gate between two runs, or two pytest-benchmark
JSON files. Exit 0 pass, 1 a regression (or a case failing now), 2 unusable input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carbonbench.cli.common import add_db_argument

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


def handle(args: argparse.Namespace) -> int:
    from carbonbench.compare import ALPHA, compare, load_side, load_thresholds, markdown
    from carbonbench.outputs import check_writable, write_text

    if args.markdown:
        check_writable(args.markdown, "Markdown summary")
    baseline = load_side(args.baseline, args.db)
    current = load_side(args.current, args.db)
    result = compare(
        baseline,
        current,
        load_thresholds(args.thresholds, suite_text=current.suite_text),
        allow_hardware_mismatch=args.allow_hardware_mismatch,
        **({"metrics": args.metric} if args.metric else {}),
    )
    if args.markdown:
        write_text(args.markdown, markdown(result), "Markdown summary")
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        console = Console()
        table = Table(title=f"{result.baseline} → {result.current}")
        for column in ("case", "metric", "baseline", "current", "change", "p", "verdict"):
            table.add_column(column, justify="right" if column in ("change", "p") else "left")
        style = {"regression": "bold red", "improvement": "green", "no data": "yellow"}
        for v in result.verdicts:
            if v.verdict == "unchanged" and not args.all:
                continue
            table.add_row(
                v.case_id,
                v.metric,
                f"{v.baseline:.4g}" if v.baseline is not None else "",
                f"{v.current:.4g}" if v.current is not None else "",
                f"{100 * (v.ratio - 1):+.1f}%" if v.ratio is not None else "",
                f"{v.p_value:.3g}" if v.p_value is not None else "",
                f"[{style.get(v.verdict, '')}]{v.verdict}" if v.verdict in style else v.verdict,
            )
        if table.row_count:
            console.print(table)
        unchanged = sum(v.verdict == "unchanged" for v in result.verdicts)
        console.print(
            f"{len(result.regressions)} regression(s), {unchanged} unchanged metric(s) of "
            f"{len(result.verdicts)}; regression: ratio of medians beyond the threshold t and "
            f"one-sided Mann-Whitney U against the baseline x (1 + t), p <= {ALPHA}",
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
    return 0 if result.passed else 1
