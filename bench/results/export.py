"""Stored rows as CSV, Parquet or JSON, for any tool to read.

One fixed schema, the same for every run and every night: the columns of ``ResultRow`` in
their order, each with one type (integers, floats, text, booleans, ``created_at`` a UTC
timestamp), missing values as typed nulls, so many nights' files read as one dataset. JSON
keeps the nested columns (energy per domain, methods, timeline, ...) as objects and is strict
(no NaN or Infinity: null); CSV and Parquet hold them as JSON text, one column each.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from carbonbench.errors import InputError
from carbonbench.results.outputs import check_writable, write_text
from carbonbench.results.store import JSON_COLUMNS, ResultRow

FORMATS = ("csv", "parquet", "json")


def _finite(value: Any) -> Any:
    """NaN and infinities as None, all the way down: strict JSON has no word for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def arrow_schema():
    """The Parquet schema: one Arrow type per ResultRow field."""
    import pyarrow as pa

    hints = get_type_hints(ResultRow)
    types = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
    columns = []
    for f in fields(ResultRow):
        if f.name in JSON_COLUMNS:
            kind = pa.string()
        elif f.name == "created_at":
            kind = pa.timestamp("s", tz="UTC")
        else:
            base = [a for a in get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
            kind = types[base[0]]
        columns.append(pa.field(f.name, kind))
    return pa.schema(columns)


def _records(rows: list[ResultRow], json_text: bool) -> list[dict[str, Any]]:
    return [_finite(r.to_dict(json_text=json_text)) for r in rows]


def write_rows(rows: list[ResultRow], fmt: str, output: Path | None) -> None:
    """Write ``rows`` in ``fmt`` to ``output`` (default: standard output)."""
    if output is not None:
        check_writable(output, f"{fmt} export")
    if fmt == "json":
        text = json.dumps(_records(rows, json_text=False), indent=1, allow_nan=False)
        if output is not None:
            write_text(output, text + "\n", "JSON export")
        else:
            print(text)
        return
    import pandas as pd
    import pyarrow as pa

    records = _records(rows, json_text=True)
    for record in records:
        record["created_at"] = pd.Timestamp(record["created_at"]).tz_convert("UTC")
    table = pa.Table.from_pylist(records, schema=arrow_schema())
    try:
        if fmt == "csv":
            table.to_pandas().to_csv(output or sys.stdout, index=False)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, output if output is not None else sys.stdout.buffer)
    except OSError as error:
        raise InputError(f"cannot write the {fmt} export to {output}: {error.strerror}") from None
