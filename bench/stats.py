"""Summary statistics over repeated windows: median and a bootstrap confidence interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median. One value gives a zero-width interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to summarise")
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, data.size, (resamples, data.size))], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def relative_half_width(values: Sequence[float]) -> float:
    """Half the 95% interval's width over the median (inf for fewer than 3 values)."""
    if len(values) < 3:
        return float("inf")
    low, high = bootstrap_ci(values)
    centre = median(values)
    return (high - low) / 2 / abs(centre) if centre else float("inf")
