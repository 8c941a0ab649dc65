"""The gate's thresholds: how large a change of each metric must be to count, per case glob.

Here, below the measurement and the gate, so that parsing a suite file checks its [thresholds]
table without importing either. The metric names live here for the same reason;
``carbonbench.results.metrics`` defines what each one measures.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from carbonbench.errors import InputError

# what the gate judges; the exact ones change on any difference, the others are noisy
STATISTICAL = (
    "energy_per_token",
    "time_per_token",
    "co2e_per_1k_tokens",
    "peak_memory",
    "time_per_call",  # plain pytest-benchmark files: seconds per call
)
EXACT = ("flops_per_step", "params")
METRICS = STATISTICAL + EXACT
DEFAULT_THRESHOLD = 0.05


class ThresholdsError(InputError):
    """A [thresholds] table that cannot be used: the message names its source."""


@dataclass
class Thresholds:
    default: dict[str, float] = field(default_factory=dict)
    cases: list[tuple[str, dict[str, float]]] = field(default_factory=list)  # (glob, overrides)

    def for_case(self, case_id: str, metric: str) -> float:
        """The last matching case glob's value, else the table's default, else 5%."""
        value = self.default.get(metric, DEFAULT_THRESHOLD)
        for pattern, overrides in self.cases:
            if fnmatch.fnmatchcase(case_id, pattern) and metric in overrides:
                value = overrides[metric]
        return value


def thresholds_from_table(table: Any, source: str) -> Thresholds:
    """Thresholds from a [thresholds] table, every value checked (``source`` names it)."""
    if not isinstance(table, dict):
        raise ThresholdsError(f"{source}: [thresholds] must be a table of metric = fraction")
    thresholds = Thresholds()
    for key, value in table.items():
        if key == "case":
            if not isinstance(value, list):
                raise ThresholdsError(
                    f"{source}: thresholds.case must be [[thresholds.case]] tables"
                )
            for entry in value:
                if not isinstance(entry, dict):
                    raise ThresholdsError(f"{source}: each [[thresholds.case]] must be a table")
                pattern = entry.get("match")
                if not isinstance(pattern, str):
                    raise ThresholdsError(f"{source}: each [[thresholds.case]] needs match = GLOB")
                overrides = {k: _fraction(source, k, v) for k, v in entry.items() if k != "match"}
                thresholds.cases.append((pattern, overrides))
        else:
            thresholds.default[key] = _fraction(source, key, value)
    return thresholds


def _fraction(source: str, key: str, value: Any) -> float:
    if key not in METRICS:
        raise ThresholdsError(f"{source}: unknown metric {key!r}; valid: {', '.join(METRICS)}")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 10:
        raise ThresholdsError(f"{source}: {key} must be a fraction such as 0.05, got {value!r}")
    return float(value)
