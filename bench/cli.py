"""The ``carbonbench`` command: a thin layer of argument parsing over the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bench import __version__


def _models(args: argparse.Namespace) -> int:
    """List the architectures with their parameter counts per size (built on the meta device)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    import models

    rows = []
    for name, arch in models.ARCHITECTURES.items():
        counts = {}
        for size in arch.sizes:
            with torch.device("meta"):
                counts[size] = models.count_parameters(models.build(name, size))
        rows.append({"arch": name, "description": arch.description, "parameters": counts})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="Architectures (parameters per size)")
    table.add_column("arch", style="bold")
    for size in models.SIZES:
        table.add_column(size, justify="right")
    table.add_column("description")
    for row in rows:
        sizes = [f"{row['parameters'][s] / 1e6:.2f} M" for s in models.SIZES]
        table.add_row(row["arch"], *sizes, row["description"])
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonbench",
        description="Measure the energy and carbon emissions of neural-network architectures.",
    )
    parser.add_argument("--version", action="version", version=f"carbonbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("models", help="list the reference architectures and sizes")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:  # bad input: one line naming the problem, no traceback
        print(f"carbonbench: error: {error}", file=sys.stderr)
        return 2
