"""codecarbon's bundled tables, read as the files they are.

codecarbon's ``DataSource`` loads every table at once, with pandas for the CSV ones: about
0.4 s wherever one table is needed (at the start of every run, and in every worker of a
machine whose CPU is looked up). The package is found, not imported (importing it loads its
tracker, 70 ms); ``tests/test_carbon_data.py`` checks the tables are the ones it loads.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from carbonbench.errors import InputError


def data_file(*parts: str) -> Path:
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("codecarbon is not installed: pip install codecarbon")
    return Path(next(iter(spec.submodule_search_locations)), "data", *parts)


@cache
def json_table(*parts: str) -> dict[str, Any]:
    return json.loads(data_file(*parts).read_text())


@cache
def csv_rows(*parts: str) -> tuple[dict[str, str], ...]:
    with data_file(*parts).open(newline="", encoding="utf-8-sig") as f:  # some begin with a BOM
        return tuple(csv.DictReader(f))
