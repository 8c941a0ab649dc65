"""The ``carbonbench`` command: one module per subcommand, registered from ``COMMANDS``.

Each module has ``NAME``, ``HELP``, ``configure(parser)`` and ``handle(args) -> int``; handlers
parse and print, the library decides. Errors the user can fix (``CarbonbenchError``) print
one line and exit 2; anything else is a bug and keeps its traceback. ``-v``/``-vv`` (or
CARBONBENCH_LOG) turn on the log lines on standard error, see ``carbonbench.logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
import sys
import traceback
from collections.abc import Sequence

from carbonbench import __version__, logs
from carbonbench.cli import (
    ab,
    changes,
    compare,
    estimate,
    export,
    measure,
    models,
    pareto,
    report,
    run,
    runs,
    sensors,
    serving,
)
from carbonbench.errors import CarbonbenchError, InternalError

log = logging.getLogger(__name__)

COMMANDS = (
    models,
    sensors,
    run,
    measure,
    serving,
    runs,
    report,
    export,
    compare,
    ab,
    changes,
    pareto,
    estimate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonbench",
        description="Measure the energy and carbon emissions of neural-network architectures.",
    )
    parser.add_argument("--version", action="version", version=f"carbonbench {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error (also: CARBONBENCH_DEBUG=1)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what carbonbench does on standard error: -v info, -vv debug "
        "(also: CARBONBENCH_LOG=debug|info|warning|error)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.NAME, help=command.HELP, description=command.__doc__)
        command.configure(sub)
        sub.set_defaults(handler=command.handle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success (a gate that passed), 1 a gate that failed or a run with failed
    cases, 2 bad input, an unusable file or an internal error, always with one line on
    standard error (``--debug`` or CARBONBENCH_DEBUG=1: the traceback too), 130/143 for a run
    stopped by SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("CARBONBENCH_DEBUG", "") not in ("", "0")
    try:
        logs.configure(args.verbose)
        given = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
        log.info("carbonbench %s: %s (pid %d)", __version__, args.command, os.getpid())
        log.debug("command %s with %s", args.command, given)
        return args.handler(args)
    except InternalError as error:  # a bug, found in a worker: say so
        _fail(f"internal error: {error} (a bug in carbonbench: please report it)", debug)
    except CarbonbenchError as error:  # bad input: one line naming it, no traceback
        _fail(str(error), debug)
    except sqlite3.Error as error:
        _fail(f"results store: {error}", debug)
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("carbonbench: stopped", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: still one line and exit 2, never 1 (a gate's failure)
        _fail(
            f"internal error: {type(error).__name__}: {error} (rerun with --debug for the "
            "traceback, and report it)",
            debug,
        )
    return 2


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"carbonbench: error: {message}", file=sys.stderr)
