"""The ``carbonbench`` command: one module per subcommand, registered from ``COMMANDS``.

Each module has ``NAME``, ``HELP``, ``configure(parser)`` and ``handle(args) -> int``; handlers
parse and print, the library decides. Errors the user can fix (``CarbonbenchError``) print
one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from carbonbench import __version__
from carbonbench.cli import compare, estimate, export, models, report, run, runs, sensors
from carbonbench.errors import CarbonbenchError

COMMANDS = (models, sensors, run, runs, report, export, compare, estimate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonbench",
        description="Measure the energy and carbon emissions of neural-network architectures.",
    )
    parser.add_argument("--version", action="version", version=f"carbonbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.NAME, help=command.HELP, description=command.__doc__)
        command.configure(sub)
        sub.set_defaults(handler=command.handle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CarbonbenchError as error:  # bad input: one line naming it, no traceback
        print(f"carbonbench: error: {error}", file=sys.stderr)
        return 2
    except sqlite3.Error as error:
        print(f"carbonbench: error: results store: {error}", file=sys.stderr)
        return 2
