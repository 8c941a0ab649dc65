"""Arguments several commands share, and turning them into the library's settings."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from carbonbench.results.store import DEFAULT_DB

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# wide enough for any table: one renders at its content's width, not padded to the console's
UNLIMITED = 10_000


def number(text: str) -> float:
    """A finite number (argparse type): nan and inf would turn into NULL or invalid JSON later."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A fraction in [0, 1) (argparse type), e.g. a threshold of 0.05 for 5%."""
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1) such as 0.05, got {text!r}")
    return value


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"results store (default {DEFAULT_DB})"
    )


def add_carbon_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--country", metavar="ISO3", help="grid of a country, e.g. USA, FRA")
    where.add_argument("--cloud", metavar="PROVIDER:REGION", help="e.g. gcp:europe-west1")
    where.add_argument(
        "--carbon-intensity", type=number, metavar="G_PER_KWH", help="grams CO2e per kWh"
    )
    parser.add_argument("--pue", type=number, help="power usage effectiveness (default 1.0)")


def carbon_given(args: argparse.Namespace) -> bool:
    """Whether any carbon option was given on the command line."""
    names = ("carbon_intensity", "country", "cloud", "pue")
    return any(getattr(args, n) is not None for n in names)


def make_console(stderr: bool = False) -> Console:
    """A console for a command's output. Without a terminal (CI logs, nox, a pipe) and without
    COLUMNS, rich would wrap at 80 columns and split intervals and refs over two lines; there
    tables take the width their content needs instead. The stream itself is asked, not rich:
    FORCE_COLOR makes rich take a CI log for a terminal of 80 columns."""
    from rich.console import Console

    console = Console(stderr=stderr)
    isatty = getattr(console.file, "isatty", None)
    tty = isatty is not None and isatty()
    if not tty and not console.is_jupyter and "COLUMNS" not in os.environ:
        console.width = UNLIMITED
    return console


def print_table(console: Console, table: Table) -> None:
    """Print a table with its ``no_wrap`` columns (numbers, intervals, ids) whole and the others
    wrapped at most between words: where the console is too narrow for that, the table
    overflows rather than cutting a number short or dropping a column (rich's last resort)."""
    from rich.measure import Measurement

    wide = console.options.update_width(UNLIMITED)
    for column in table.columns:
        sizes = [Measurement.get(console, wide, c) for c in (column.header, *column.cells)]
        least = max(m.maximum if column.no_wrap else m.minimum for m in sizes)
        column.min_width = max(column.min_width or 0, least)
    need = Measurement.get(console, wide, table).minimum
    if need > console.width:  # rich would shrink every column, down to nothing
        table.width = need
    console.print(table, crop=False)
