"""``carbonbench models``: the architectures, their parameter counts per size, and where
each comes from."""

from __future__ import annotations

import argparse
import json

from carbonbench.cli.common import make_console, print_table

NAME = "models"
HELP = "list the architectures and their sizes"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def handle(args: argparse.Namespace) -> int:
    import torch
    from rich.table import Table

    from carbonbench import models
    from carbonbench.models.hf import FAMILIES, INSTALL, available, record

    models.load_plugins()
    hf = [f"hf:{family}" for family in FAMILIES]
    listed = dict(models.ARCHITECTURES)
    if available():  # built from transformers' configs when its extra is installed
        listed |= {name: record(name) for name in hf if name not in listed}
    rows = []
    for name, arch in listed.items():
        counts = {}
        for size, config in arch.sizes.items():
            with torch.device("meta"):  # counted without allocating
                counts[size] = models.count_parameters(arch.builder(arch.impls[0])(config))
        rows.append(
            {
                "arch": name,
                "kind": arch.kind,
                "impls": list(arch.impls),
                "generates": arch.generates,
                "description": arch.description,
                "source": arch.source,
                "parameters": counts,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    sizes = list(dict.fromkeys(s for row in rows for s in row["parameters"]))
    table = Table(title="Architectures (parameters per size)")
    table.add_column("arch", style="bold", no_wrap=True)
    for size in sizes:
        table.add_column(size, justify="right", no_wrap=True)
    table.add_column("description")
    table.add_column("source")
    for row in rows:
        counts = [
            f"{row['parameters'][s] / 1e6:.2f} M" if s in row["parameters"] else "-" for s in sizes
        ]
        table.add_row(row["arch"], *counts, row["description"], row["source"])
    console = make_console()
    print_table(console, table)
    if not available():
        console.print(f"{', '.join(hf)}: {INSTALL}", highlight=False, markup=False)
    return 0
