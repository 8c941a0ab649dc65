"""Arguments several commands share, and turning them into the library's settings."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from carbonbench.results.store import DEFAULT_DB


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
