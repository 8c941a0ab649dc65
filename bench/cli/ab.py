"""``carbonbench ab --base CMD --head CMD``: the pull-request gate. Base and head run in
alternation (ABBA), one round per run, and are judged on their paired ratios.
Exit 0 pass, 1 a regression or a case failing in head only, 2 unusable input or an error."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from carbonbench.cli.common import add_carbon_arguments, fraction, make_console
from carbonbench.cli.run import FILTERS, add_selection_arguments
from carbonbench.errors import InputError

NAME = "ab"
HELP = "pull-request gate: run base and head alternately and judge their paired ratios"
DEFAULT_DB = Path("carbonbench-results/ab.sqlite")


def configure(parser: argparse.ArgumentParser) -> None:
    for side in ("base", "head"):
        parser.add_argument(
            f"--{side}",
            required=True,
            metavar="CMD",
            help=f"command that runs the {side}'s carbonbench, e.g. '../{side}/.venv/bin/"
            "carbonbench' or 'env OMP_NUM_THREADS=4 carbonbench' (split like a shell would)",
        )
    add_selection_arguments(parser)  # the same for both sides
    parser.add_argument("--corpus", help="train on this text file, both sides")
    parser.add_argument("--cpu-tdp", metavar="W", help="CPU TDP for the CPU model")
    add_carbon_arguments(parser)
    parser.add_argument("--pairs", type=int, default=6, metavar="N", help="pairs of runs (6)")
    parser.add_argument(
        "--max-pairs",
        type=int,
        metavar="M",
        help="while a verdict is borderline, look again with about 1.6 times the pairs, up to M "
        "(default 16, or N if more)",
    )
    parser.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"store for the runs (default {DEFAULT_DB})"
    )
    parser.add_argument("--thresholds", type=Path, metavar="FILE", help="TOML with [thresholds]")
    parser.add_argument(
        "--metric",
        action="append",
        help="only this metric (repeatable; default energy and time per token, FLOPs per step, "
        "parameters)",
    )
    parser.add_argument("--alpha", type=fraction, default=0.05, help="false-alarm rate (0.05)")
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write a Markdown summary"
    )
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument("--all", action="store_true", help="show unchanged metrics too")


def run_arguments(args: argparse.Namespace) -> list[str]:
    """What both sides' `run` gets: the suite, its filters, the data and the carbon options."""
    out: list[str] = []
    if args.suite:
        out += ["--suite", args.suite]
    for name in FILTERS:
        for value in getattr(args, name) or []:
            out += [f"--{name}", value]
    for option in ("corpus", "cpu_tdp", "country", "cloud", "carbon_intensity", "pue"):
        if (value := getattr(args, option)) is not None:
            out += [f"--{option.replace('_', '-')}", str(value)]
    return out


def _command(text: str, side: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise InputError(f"--{side} {text!r} cannot be split like a shell would: {error}") from None
    if not argv:
        raise InputError(f"--{side} is empty: give the command that runs carbonbench")
    return argv


def handle(args: argparse.Namespace) -> int:
    from carbonbench.analysis.ab import METHOD, METRICS, Ab, AbPlan, Interrupted
    from carbonbench.analysis.compare import METRICS as KNOWN
    from carbonbench.analysis.compare import load_thresholds, markdown
    from carbonbench.cli.compare import print_comparison
    from carbonbench.results.outputs import check_writable, write_text
    from carbonbench.results.store import Store

    if args.markdown:
        check_writable(args.markdown, "Markdown summary")
    if unknown := sorted(set(args.metric or ()) - set(KNOWN)):
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(KNOWN)}")
    with Store(args.db):  # a damaged or unwritable store is refused before any run
        pass
    plan = AbPlan(
        _command(args.base, "base"),
        _command(args.head, "head"),
        run_arguments(args),
        args.db,
        pairs=args.pairs,
        max_pairs=args.max_pairs,
        alpha=args.alpha,
        thresholds=load_thresholds(args.thresholds),
        metrics=tuple(args.metric or METRICS),
    )
    console = make_console(stderr=True)

    def on_event(kind: str, info: dict) -> None:
        if kind == "side":
            console.print(f"pair {info['pair'] + 1}: {info['side']}", highlight=False)
        elif kind == "more":
            console.print(f"borderline: running up to {info['pairs']} pairs", highlight=False)

    ab = Ab(plan, on_event)
    try:
        result = ab.run()
    except Interrupted as stop:
        console.print(
            f"[yellow]{stop.signal_name}[/]: stopped after {len(ab.pairs)} full pair(s); "
            f"every finished run is in {args.db}",
            highlight=False,
        )
        return 130 if stop.signal_name == "SIGINT" else 143
    if args.markdown:
        write_text(args.markdown, markdown(result, "carbonbench ab", METHOD), "Markdown summary")
    if args.json:
        print(json.dumps({"comparison": ab.comparison_id, **result.to_json()}, indent=2))
    else:
        print_comparison(make_console(), result, show_all=args.all, method=METHOD)
    return 0 if result.passed else 1
