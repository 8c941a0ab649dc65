"""``carbonbench run``: a suite measured case by case, stored row by row, and its table."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from carbonbench.cli.common import (
    add_carbon_arguments,
    add_db_argument,
    carbon_given,
    make_console,
    number,
    print_table,
)
from carbonbench.errors import InputError, InternalError

if TYPE_CHECKING:
    from carbonbench.results.store import ResultRow
    from carbonbench.suites.suite import Suite

NAME = "run"
HELP = "run a benchmark suite and store its results"
FILTERS = ("arch", "phase", "size", "device", "impl", "dtype")  # narrow a suite's matrix


def _sweep_rule(suite: Suite) -> Callable[[list[ResultRow]], dict[str, str]] | None:
    """The rule a sweep that stops early drops settings by (None: every setting, every round)."""
    if suite.measure.sweep != "halving":
        return None
    from carbonbench.analysis.pareto import confidently_dominated
    from carbonbench.execution.supervisor import SWEEP_X, SWEEP_Y

    return functools.partial(confidently_dominated, x=SWEEP_X, y=SWEEP_Y)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """--suite and the filters that narrow its matrix (``run`` and ``ab`` share them)."""
    parser.add_argument(
        "--suite",
        help="built-in name (smoke, gpu, nightly, settings, gpu-settings) or path (default: smoke)",
    )
    for name in FILTERS:
        parser.add_argument(
            f"--{name}",
            action="append",
            metavar=name.upper(),
            help=f"only cases with this {name} (repeatable)",
        )


def configure(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="measure every case in N fresh worker processes (default: the suite's rounds)",
    )
    parser.add_argument("--label", help="free text stored with the run (e.g. a PR number)")
    add_db_argument(parser)
    parser.add_argument("--corpus", help="train on this text file (byte-level tokens, vocab 256)")
    parser.add_argument("--cpu-tdp", type=number, metavar="W", help="CPU TDP for the CPU model")
    add_carbon_arguments(parser)
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with DistributedDataParallel over N processes on this host",
    )
    parser.add_argument(
        "--resume",
        metavar="REF",
        help="add the cases a stopped run (id, latest, latest~N) has no rows for, with its "
        "suite, filters, label and carbon settings",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--pushgateway",
        metavar="URL",
        help="after the run, push its metrics to this Prometheus Pushgateway (prometheus extra)",
    )


class WattsColumn(ProgressColumn):
    """The average power of the last measured window, over the domains that add up."""

    def __init__(self) -> None:
        super().__init__()
        self.watts: float | None = None

    def render(self, task) -> Text:
        return Text("      - W" if self.watts is None else f"{self.watts:7.1f} W", "bold yellow")


def _plan(args: argparse.Namespace):
    """(suite, carbon, options) from the command line, or from the run to resume; a suite
    asking for a device this machine lacks, or a GPU setting it cannot make (out of range, no
    root), is refused here, before anything is stored."""
    from carbonbench.energy import controls
    from carbonbench.energy.carbon import resolve
    from carbonbench.energy.devices import check_devices
    from carbonbench.execution.protocol import IDLE_BASELINE_ENV, IdleBaseline, RunOptions
    from carbonbench.execution.resume import plan_resume
    from carbonbench.suites.suite import load, narrow

    if args.resume is not None:
        names = ("suite", *FILTERS, "label", "nproc", "corpus", "cpu_tdp", "rounds")
        mixed = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n)]
        mixed += ["carbon options"] * carbon_given(args)
        if mixed:
            raise InputError(
                f"--resume measures as the run did: drop {', '.join(mixed)} (a new run takes them)"
            )
        plan = plan_resume(args.db, args.resume)
        check_devices(c.device for c in plan.suite.cases)
        controls.check(plan.suite.cases)
        options = RunOptions(
            label=plan.label,
            corpus=plan.corpus,
            seed=plan.seed,
            cpu_tdp_w=plan.cpu_tdp_w,
            filters=plan.filters,
            resume=plan.run_id,
        )
        return plan.suite, plan.carbon, options, plan.rounds
    filters = {name: getattr(args, name) for name in FILTERS if getattr(args, name)}
    suite = narrow(load(args.suite or "smoke"), **filters)
    if not suite.cases and filters:
        raise InputError(f"no case of suite {suite.name!r} matches the filters given")
    if not suite.cases:
        reasons = "; ".join(suite.skipped[:2]) + ("; ..." if len(suite.skipped) > 2 else "")
        raise InputError(
            f"suite {suite.name!r} has no case that can run: every combination of its matrix "
            f"is skipped ({reasons})"
        )
    check_devices(c.device for c in suite.cases)
    controls.check(suite.cases)
    if args.corpus is not None:
        _check_corpus(args.corpus, suite)
    c = suite.carbon
    given = args.carbon_intensity is not None or args.country or args.cloud
    carbon = resolve(
        intensity=args.carbon_intensity if given else c.intensity,
        country=args.country if given else c.country,
        cloud=args.cloud if given else c.cloud,
        pue=args.pue if args.pue is not None else c.pue,
    )
    if args.rounds is not None and args.rounds < 1:
        raise InputError(f"--rounds must be at least 1, got {args.rounds}")
    given_idle = os.environ.get(IDLE_BASELINE_ENV)
    options = RunOptions(
        label=args.label,
        corpus=args.corpus,
        cpu_tdp_w=args.cpu_tdp,
        filters=filters,
        rounds=args.rounds,
        idle=IdleBaseline.from_env(given_idle) if given_idle else None,
    )
    return suite, carbon, options, None


def _check_corpus(path: str, suite) -> None:
    """Refused before the run, not as a run of failed cases: a corpus that cannot be read or
    is shorter than the longest sequence a case needs."""
    from carbonbench.execution.corpus import read_corpus

    data = read_corpus(path)  # unreadable or too short: one line
    longest = max(c.seq_len for c in suite.cases) + 1
    if len(data) < longest:
        raise InputError(
            f"corpus {path} has {len(data)} bytes, fewer than one sequence of {longest}: "
            "use a longer file or a shorter seq_len"
        )


def handle(args: argparse.Namespace) -> int:
    from carbonbench.execution.topology import topology_from_env

    if args.pushgateway is not None:
        from carbonbench.integrations.prometheus import check_gateway

        check_gateway(args.pushgateway)  # refused before the run, not after it
    suite, carbon, options, rounds = _plan(args)
    console = make_console(stderr=args.json)
    topology = topology_from_env()
    if options.resume is not None and topology is not None:
        raise InputError("--resume takes single-process runs, not a torchrun job")
    if args.nproc is not None or topology is not None:
        return _distributed(args, console, suite, carbon, options, topology)
    return _supervised(args, console, suite, carbon, options, rounds)


def _distributed(args, console, suite, carbon, options, topology) -> int:
    from carbonbench.execution.distributed import launch, run_rank, training_only
    from carbonbench.execution.protocol import JobFailed

    suite = training_only(suite)
    if not suite.cases:
        raise InputError(f"suite {suite.name!r} has no train case to run distributed")
    try:
        if topology is not None:  # under torchrun: this is one rank
            run_id, _ = run_rank(suite, str(args.db), carbon, options, cpu_tdp_w=options.cpu_tdp_w)
            if topology.rank != 0:
                return 0
        else:
            run_id = launch(args.nproc, suite, str(args.db), carbon, options, options.cpu_tdp_w)
    except JobFailed as error:  # one line; the rows finished before it are stored
        print(f"carbonbench: error: {error}; finished rows are in {args.db}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"carbonbench: stopped; finished rows are in {args.db}", file=sys.stderr)
        return 130
    return _print_stored(console, args, run_id, carbon)


def _supervised(args, console, suite, carbon, options, rounds) -> int:
    """Rounds of worker processes, with a progress bar: round, case, time left. The bar
    follows the run's events; how the run ended comes back as its Outcome."""
    from carbonbench.execution.protocol import (
        CaseDone,
        CaseStarted,
        Event,
        Idle,
        Replaced,
        Round,
        RowStored,
        Starting,
        Stopping,
    )
    from carbonbench.execution.supervisor import Supervisor
    from carbonbench.results.runlog import new_run_id
    from carbonbench.signals import EXIT_STATUS

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        watts := WattsColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("starting", total=None)
    where = {"round": 0, "rounds": 0}

    def on_event(event: Event) -> None:
        if isinstance(event, Round):
            where.update(round=where["round"] + 1, rounds=max(where["rounds"], event.rounds))
            progress.update(task, total=event.scheduled)
        elif isinstance(event, Starting):
            progress.update(task, description=f"starting {event.workers} worker(s)")
        elif isinstance(event, Idle):
            progress.update(task, description=f"idle baseline {event.seconds:g} s")
        elif isinstance(event, CaseStarted):
            label = f"round {where['round']}/{where['rounds']} · {event.case_id}"
            progress.update(task, description=label)
        elif isinstance(event, CaseDone):
            progress.advance(task)
        elif isinstance(event, RowStored) and event.status == "failed":
            progress.console.print(f"[red]failed[/] {event.case_id}: {event.error}")
        elif isinstance(event, RowStored):
            watts.watts = event.watts
        elif isinstance(event, Replaced):
            progress.console.print(
                f"[yellow]worker replaced[/] in round {event.round + 1}: {event.cause}",
                highlight=False,
            )
        elif isinstance(event, Stopping):
            progress.console.print(
                f"[yellow]{event.signal}[/]: stopping after the current window "
                "(again to stop at once)"
            )

    supervisor = Supervisor(
        suite,
        args.db,
        carbon,
        options,
        run_id=options.resume or new_run_id(),
        rounds=rounds,
        on_event=on_event,
        drop=_sweep_rule(suite),
    )
    with progress:
        outcome = supervisor.run()
    if outcome.internal:
        raise InternalError(f"{outcome.error}; every finished row is in {args.db}")
    if outcome.error is not None:
        console.print(f"[red]error[/] {outcome.error}", highlight=False)
    if outcome.status == "interrupted":
        console.print(
            f"[yellow]interrupted[/] by {outcome.stopped_by}: every finished row is kept; "
            f"`carbonbench run --resume {outcome.run_id}` measures the rest",
            highlight=False,
        )
    code = _print_stored(console, args, outcome.run_id, carbon)
    return EXIT_STATUS.get(outcome.stopped_by or "", code)


def _print_stored(console: Console, args: argparse.Namespace, run_id: str, carbon) -> int:
    """The summary of a run from its stored rows (a distributed run's rank 0 wrote them)."""
    from carbonbench.results.store import Store
    from carbonbench.suites.suite import case_order

    with Store(args.db, create=False, readonly=True) as store:
        rows = store.rows(run_id)
        run = store.run(run_id)
    order = case_order(run.suite_text, run.suite_source)
    code = _print_result(console, args, run_id, run.status, rows, carbon, order)
    if args.pushgateway is not None:  # a failed push warns; the exit status stays the run's
        from carbonbench.integrations.prometheus import push_or_warn

        push_or_warn(args.pushgateway, args.db, run_id)
    sweep = run.metadata.sweep
    if sweep is not None and sweep.dropped and not args.json:
        cases = len({r.case_id for r in rows})
        console.print(
            f"{sweep.method}: {len(sweep.dropped)} of {cases} settings got no more rounds once "
            f"another beat them with confidence on {sweep.x} and {sweep.y}",
            highlight=False,
        )
    return code


def _print_result(
    console: Console, args, run_id: str, status: str, rows, carbon, order=None
) -> int:
    from carbonbench.analysis.summary import summarise

    cases = [case.to_dict() for case in summarise(rows, order)]
    # run.schema.json documents this: `ab` reads it from other installs, so only ever add
    result = {"schema": 1, "run_id": run_id, "status": status, "db": str(args.db), "cases": cases}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(console, result, carbon)
    return 0 if status == "ok" else 1


def _setting(case: dict[str, Any], swept: list[str]) -> str:
    """A case's values of the swept settings, short: ``b8 t2 bfloat16 pl300w``."""
    from carbonbench.suites.case import tag

    return " ".join(tag(k, case[k]) if case[k] is not None else f"{k}=-" for k in swept)


def _print_table(console: Console, result: dict[str, Any], carbon) -> None:
    from carbonbench.suites.case import KNOBS

    table = Table(title=f"run {result['run_id']} ({result['status']})")
    swept = [k for k in KNOBS if len({c.get(k) for c in result["cases"]}) > 1]
    columns = (
        "arch",
        *(["setting"] if swept else []),
        "phase",
        "rounds",
        "mJ/token",
        "95% CI",
        "mgCO2e/1k tok",
        "tokens/s",
        "method",
    )
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("arch", "setting", "phase", "method") else "right",
            no_wrap=column != "method",  # which also holds a failed case's error
        )
    for case in result["cases"]:
        setting = [_setting(case, swept)] if swept else []
        if case["status"] != "ok":
            table.add_row(
                case["arch"],
                *setting,
                case["phase"],
                "",
                "[red]failed",
                "",
                "",
                "",
                case["error"] or "",
            )
            continue
        ci = case["j_per_token_ci"]
        table.add_row(
            case["arch"],
            *setting,
            case["phase"],
            str(case["rounds"]),
            f"{1e3 * case['j_per_token']:.3g}" if case["j_per_token"] is not None else "-",
            f"{1e3 * ci[0]:.3g} to {1e3 * ci[1]:.3g}" if ci else "-",
            f"{1e3 * case['g_co2e_per_1k_tokens']:.3g}" if case["g_co2e_per_1k_tokens"] else "-",
            f"{case['tokens_per_s']:,.0f}" if case["tokens_per_s"] is not None else "-",
            ", ".join(case["methods"]),
        )
    print_table(console, table)
    console.print(f"carbon intensity {carbon.describe()}", highlight=False)
    console.print(f"run id [bold]{result['run_id']}[/] stored in {result['db']}")
    if swept:
        console.print(
            f"settings swept: {', '.join(swept)}; `carbonbench pareto {result['run_id']} "
            f"--db {result['db']}` finds the front and the setting to use",
            highlight=False,
        )
