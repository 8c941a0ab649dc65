"""Stored rows as CSV, Parquet or JSON, for any tool to read.

JSON keeps the nested columns (energy per domain, methods, timeline, ...) as objects; CSV and
Parquet hold them as JSON text, one column each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from carbonbench.store import ResultRow

FORMATS = ("csv", "parquet", "json")


def write_rows(rows: list[ResultRow], fmt: str, output: Path | None) -> None:
    """Write ``rows`` in ``fmt`` to ``output`` (default: standard output)."""
    if fmt == "json":
        text = json.dumps([r.to_dict() for r in rows], indent=1)
        if output is not None:
            output.write_text(text)
        else:
            print(text)
        return
    import pandas as pd

    frame = pd.DataFrame([r.to_dict(json_text=True) for r in rows])
    if fmt == "csv":
        frame.to_csv(output or sys.stdout, index=False)
    else:
        frame.to_parquet(output if output is not None else sys.stdout.buffer, index=False)
