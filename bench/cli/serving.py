"""``carbonbench serving``: an OpenAI-compatible server's energy per request and per output
token at levels of load, with its latencies; one stored row per level and round. Exit 0; 1 if
a level failed (the server died, or no request of it succeeded); 2 for unusable input (no
server answers, a wrong model name, a server that does not come up)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from carbonbench.cli.common import add_carbon_arguments, add_db_argument, make_console, number
from carbonbench.errors import InputError

if TYPE_CHECKING:
    from carbonbench.serving.run import LevelDone, ServingOptions

NAME = "serving"
HELP = "energy per request and per output token of a serving engine under load"


def configure(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("the server")
    target.add_argument("--url", required=True, help="its root, e.g. http://127.0.0.1:8000")
    target.add_argument("--model", required=True, help="the model name requests ask for")
    target.add_argument(
        "--chat", action="store_true", help="use /v1/chat/completions (default /v1/completions)"
    )
    target.add_argument(
        "--server",
        metavar="CMD",
        help="start the server with this command (and stop it at the end); its output is kept "
        "in the run's log folder",
    )
    target.add_argument(
        "--server-timeout",
        type=number,
        default=300.0,
        metavar="S",
        help="how long the server may take to answer after --server starts it (300 s)",
    )
    load = parser.add_argument_group("the load")
    load.add_argument(
        "--concurrency",
        type=int,
        action="append",
        metavar="N",
        help="a level of N requests always in flight (closed loop); repeatable",
    )
    load.add_argument(
        "--rate",
        type=number,
        action="append",
        metavar="R",
        help="a level of Poisson arrivals, R requests per second; repeatable",
    )
    load.add_argument("--requests", type=int, default=32, metavar="N", help="per level (32)")
    load.add_argument(
        "--prompt-tokens",
        default="64",
        metavar="SPEC",
        help="prompt length: N, uniform:A-B or normal:MEAN,SD (about N words; 64)",
    )
    load.add_argument(
        "--max-tokens", default="64", metavar="SPEC", help="answer length, same forms (64)"
    )
    load.add_argument("--corpus", type=Path, help="take prompt words from this text file")
    load.add_argument("--seed", type=int, default=0, help="prompts, arrivals and order (0)")
    load.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="requests sent before measuring, one at a time, not measured (2)",
    )
    load.add_argument(
        "--timeout", type=number, default=300.0, metavar="S", help="per request (300 s)"
    )
    load.add_argument(
        "--extra-body", metavar="JSON", help="merged into each request, e.g. '{\"temperature\": 0}'"
    )
    measure = parser.add_argument_group("the measurement")
    measure.add_argument(
        "--rounds", type=int, default=1, metavar="N", help="repeats of every level (1)"
    )
    measure.add_argument(
        "--idle-baseline",
        type=number,
        default=5.0,
        metavar="S",
        help="idle power with the server loaded and idle, before the levels (5 s; 0: none)",
    )
    measure.add_argument(
        "--interval", type=number, default=0.1, metavar="S", help="sampling interval (0.1 s)"
    )
    measure.add_argument("--cpu-tdp", type=number, metavar="W", help="CPU TDP for the CPU model")
    measure.add_argument(
        "--latency-limit",
        type=number,
        metavar="S",
        help="a p90 inter-token latency objective: the report recommends the level within it "
        "at the lowest energy per token",
    )
    measure.add_argument("--label", help="free text stored with the run")
    add_db_argument(parser)
    add_carbon_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the levels as JSON")


def _options(args: argparse.Namespace) -> ServingOptions:
    from carbonbench.serving.prompts import LengthSpec
    from carbonbench.serving.run import Level, ServingOptions

    levels = [Level(concurrency=n) for n in args.concurrency or []]
    levels += [Level(rate=r) for r in args.rate or []]
    if not levels:
        raise InputError("give a level of load: --concurrency N or --rate R (repeatable)")
    if len(set(levels)) < len(levels):
        raise InputError("a level is given twice: give each --concurrency/--rate once")
    if args.requests < 1 or args.rounds < 1 or args.warmup < 0:
        raise InputError("--requests and --rounds must be at least 1, --warmup at least 0")
    extra: dict = {}
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except json.JSONDecodeError as error:
            raise InputError(f"--extra-body is not JSON ({error.msg}): give an object") from None
        if not isinstance(extra, dict):
            raise InputError("--extra-body must be a JSON object, e.g. '{\"temperature\": 0}'")
    return ServingOptions(
        url=args.url,
        model=args.model,
        levels=levels,
        chat=args.chat,
        requests=args.requests,
        prompt_tokens=LengthSpec.parse(args.prompt_tokens),
        max_tokens=LengthSpec.parse(args.max_tokens),
        corpus=args.corpus,
        seed=args.seed,
        rounds=args.rounds,
        warmup=args.warmup,
        timeout_s=args.timeout,
        idle_baseline_s=args.idle_baseline,
        interval_s=args.interval,
        server=args.server,
        server_timeout_s=args.server_timeout,
        label=args.label,
        cpu_tdp_w=args.cpu_tdp,
        extra_body=extra,
        latency_limit_s=args.latency_limit,
    )


def handle(args: argparse.Namespace) -> int:
    from carbonbench.energy.carbon import resolve
    from carbonbench.serving.run import ServingRun

    options = _options(args)
    carbon = resolve(
        intensity=args.carbon_intensity, country=args.country, cloud=args.cloud, pue=args.pue
    )
    console = make_console(stderr=True)
    levels: list[dict] = []

    def on_level(done: LevelDone) -> None:
        level = _level(done)
        levels.append(level)
        if not args.json:
            console.print(_line(level), highlight=False)

    run = ServingRun(options, args.db, carbon, on_level=on_level)
    outcome = run.run()
    if args.json:
        result = {"run_id": outcome.run_id, "status": outcome.status, "levels": levels}
        print(json.dumps(result, indent=2))
    else:
        console.print(f"run id [bold]{outcome.run_id}[/] stored in {args.db}")
    if outcome.error:  # last, whole, on one line: what a CI log shows of a failed run
        print(f"carbonbench: error: {outcome.error}", file=sys.stderr, flush=True)
    if outcome.status == "interrupted":
        return 130
    return 0 if outcome.status == "ok" else 1


def _level(done: LevelDone) -> dict:
    row = done.row
    extra = row.extra
    level = {
        "round": done.round,
        "level": str(done.level),
        "concurrency": row.concurrency,
        "rate": row.rate,
        "status": row.status,
        "error": row.error,
        "energy_j": row.energy_j if row.ok else None,
        "duration_s": row.duration_s if row.ok else None,
        "output_tokens": row.tokens if row.ok else None,
        "energy_per_token_j": row.energy_j / row.tokens if row.ok and row.tokens else None,
        "energy_per_request_j": extra.get("energy_per_request_j"),
        "methods": sorted(set(row.method_by_domain.values())),
    }
    for key in (
        "requests",
        "requests_ok",
        "requests_rejected",
        "requests_timeout",
        "requests_broken",
        "tokens_source",
        "window",
        "steady_tokens_per_s",
        "ttft_p50_s",
        "ttft_p90_s",
        "ttft_p99_s",
        "itl_p50_s",
        "itl_p90_s",
        "itl_p99_s",
        "e2e_p50_s",
        "e2e_p90_s",
        "e2e_p99_s",
        "level_energy_j",
    ):
        level[key] = extra.get(key)
    return level


def _line(level: dict) -> str:
    head = f"round {level['round']} · {level['level']}:"
    if level["status"] != "ok":
        return f"{head} [red]failed[/] {level['error']}"
    failed = level["requests"] - level["requests_ok"]
    parts = [
        f"{1e3 * level['energy_per_token_j']:.3g} mJ/token" if level["energy_per_token_j"] else "-",
        f"{level['energy_per_request_j']:.3g} J/request" if level["energy_per_request_j"] else "-",
        f"{level['steady_tokens_per_s']:.1f} tokens/s",
        f"TTFT p90 {_ms(level['ttft_p90_s'])}",
        f"ITL p90 {_ms(level['itl_p90_s'])}",
        f"E2E p90 {_ms(level['e2e_p90_s'])}",
        f"{level['requests_ok']}/{level['requests']} ok"
        + (f" ({failed} failed)" if failed else ""),
        f"tokens from {level['tokens_source']}",
        ", ".join(level["methods"]),
    ]
    return f"{head} " + " · ".join(parts)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.0f} ms"
