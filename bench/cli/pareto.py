"""``carbonbench pareto``: per group of cases, the settings a run swept (threads, batch, dtype,
power limit, ...) on energy against time, their Pareto front, and a recommended setting with
its saving against the default. Exit 0, or 2 for unusable input (a run that sweeps nothing)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from carbonbench.cli.common import add_db_argument, make_console, number, print_table

NAME = "pareto"
HELP = "energy against time over the settings a run swept: the front and a recommendation"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", nargs="?", default="latest", help="run id, latest~N (default latest)"
    )
    add_db_argument(parser)
    parser.add_argument(
        "--x", default="time_per_token", metavar="METRIC", help="time axis (time_per_token)"
    )
    parser.add_argument(
        "--y", default="energy_per_token", metavar="METRIC", help="energy axis (energy_per_token)"
    )
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument(
        "--max-slowdown",
        type=number,
        metavar="F",
        help="recommend the lowest energy within F times the fastest time (default 1.1)",
    )
    rule.add_argument(
        "--eta",
        type=number,
        metavar="E",
        help="recommend the lowest E x energy + (1 - E) x P_max x time (Zeus' cost)",
    )
    rule.add_argument(
        "--max-x",
        type=number,
        metavar="LIMIT",
        help="recommend the lowest energy among settings whose median x is within LIMIT (a "
        "latency objective: --x itl_p90_s --max-x 0.05)",
    )
    parser.add_argument(
        "--max-power-w",
        type=number,
        metavar="W",
        help="P_max for --eta (default: the device's, from the run's sensors)",
    )
    parser.add_argument(
        "--baseline",
        metavar="K=V,...",
        help="the setting savings are against (default: the suite's first values)",
    )
    parser.add_argument("--json", action="store_true", help="print the groups as JSON")


def handle(args: argparse.Namespace) -> int:
    from carbonbench.analysis.pareto import analyse, parse_baseline
    from carbonbench.results.store import Store

    baseline = parse_baseline(args.baseline) if args.baseline is not None else None
    with Store(args.db, create=False, readonly=True) as store:
        run = store.run(store.resolve(args.run))
        rows = store.rows(run.run_id)
    result = analyse(
        rows,
        run,
        x=args.x,
        y=args.y,
        max_slowdown=args.max_slowdown,
        eta=args.eta,
        max_power_w=args.max_power_w,
        baseline=baseline,
        max_x=args.max_x,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_pareto(make_console(), result)
    return 0


def _interval(iv) -> str:
    return f"{iv.median:.4g} [{iv.low:.4g}, {iv.high:.4g}]"


def _change(change) -> str:
    """``-23.4% [-30.1%, -15.2%]``, and whether it is significant."""
    text = f"{100 * change.median:+.1f}% [{100 * change.low:+.1f}%, {100 * change.high:+.1f}%]"
    return text + (" (significant)" if change.significant else " (not significant)")


def print_pareto(console: Console, result) -> None:
    """Per group: its settings by time, each with its status, then the recommended setting and
    its saving against the default."""
    style = {"front": "bold green", "dominated-not-significantly": "yellow", "dominated": "dim"}
    for group in result.groups:
        table = Table(title=f"{group.title}: sweeps {', '.join(group.knobs)}")
        for column in ("setting", f"{result.x} [95% CI]", f"{result.y} [95% CI]", "rounds"):
            justify = "left" if column == "setting" else "right"
            table.add_column(column, justify=justify, no_wrap=True)
        table.add_column("status")
        recommended = group.recommended.setting if group.recommended else None
        for s in group.settings:
            status = f"[{style[s.status]}]{s.status}[/]"
            status += " · recommended" if s is recommended else ""
            status += " · default" if s is group.baseline else ""
            table.add_row(
                s.label(group.knobs), _interval(s.x), _interval(s.y), str(s.rounds), status
            )
        print_table(console, table)
        for case_id in group.left_out:
            console.print(f"left out (no round measured both): {case_id}", highlight=False)
        if group.recommended is None or group.baseline is None:
            continue
        chosen, base = group.recommended, group.baseline
        console.print(
            f"[bold]recommended[/] {chosen.setting.label(group.knobs)} by {chosen.rule}; "
            f"against the default {base.label(group.knobs)} ({group.baseline_source}): "
            f"saving in {result.y} {_change(chosen.saving)}; "
            f"slowdown in {result.x} {_change(chosen.slowdown)}",
            highlight=False,
        )
    console.print(
        "Front: settings no other beats on both medians (over rounds). Dominated: another's 95% "
        "intervals are better on both axes, from at least 3 rounds each; not significantly: "
        "better medians only. Savings: 1 - ratio of medians, interval bootstrapped over rounds "
        "(paired by round).",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
