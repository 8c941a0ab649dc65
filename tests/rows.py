"""Result rows for tests that need a store's contents without running a suite."""

from __future__ import annotations

from typing import Any

from bench.store import ResultRow

CASE = {
    "case_id": "gpt/tiny",
    "arch": "gpt",
    "size": "tiny",
    "impl": "fused",
    "phase": "train",
    "device": "cpu",
    "dtype": "float32",
    "batch": 1,
    "seq_len": 8,
}


def row(run_id: str, repeat: int = 0, **values: Any) -> ResultRow:
    """A row of a tiny gpt training case; ``values`` override any field."""
    return ResultRow(**({"run_id": run_id, "repeat": repeat} | CASE | values))
