"""Change points in nightly history: where a case's energy or time per unit of work moved to a
new level and stayed there.

One value per run (the median over its rounds), in run order. E-divisive means (Matteson and
James, 2014; the method MongoDB's signal-processing-algorithms and Apache Otava use): the split
that maximises the energy distance between the two sides, kept when a permutation test gives
p <= alpha and the medians either side differ by at least ``min_change``; then each side is
searched again (binary segmentation). Written on numpy here: Otava pins numpy and pulls cloud
clients, signal-processing-algorithms needs numpy < 2 and gevent, and ruptures gives no p-values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from carbonbench.analysis.history import comparable, run_values
from carbonbench.results.store import ResultRow, RunRecord

ALPHA = 0.01
MIN_CHANGE = 0.05
PERMUTATIONS = 199
MIN_SEGMENT = 3  # values each side of a change
MIN_HISTORY = 11  # a change needs at least 10 earlier runs to stand against


@dataclass(frozen=True)
class ChangePoint:
    index: int  # the first value at the new level
    p_value: float
    before: float  # median of the segment before
    after: float  # median of the segment after

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else float("inf")


def _statistics(distances: np.ndarray, min_segment: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidate split indices, the E-divisive statistic of each) for one series' distances."""
    n = distances.shape[0]
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = distances.cumsum(0).cumsum(1)
    tau = np.arange(min_segment, n - min_segment + 1)
    if tau.size == 0:
        return tau, np.array([])
    m, k = tau.astype(float), (n - tau).astype(float)
    within_a = prefix[tau, tau]
    within_b = prefix[n, n] - prefix[tau, n] - prefix[n, tau] + prefix[tau, tau]
    between = prefix[tau, n] - prefix[tau, tau]
    e = 2 * between / (m * k) - within_a / (m * (m - 1)) - within_b / (k * (k - 1))
    return tau, m * k / (m + k) * e


def _best_split(values: np.ndarray, rng: np.random.Generator, permutations: int, min_segment: int):
    distances = np.abs(values[:, None] - values[None, :])
    tau, stat = _statistics(distances, min_segment)
    if tau.size == 0:
        return None
    best = int(np.argmax(stat))
    observed = stat[best]
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(values.size)
        _, shuffled = _statistics(distances[np.ix_(order, order)], min_segment)
        exceed += shuffled.max() >= observed
    return int(tau[best]), float((exceed + 1) / (permutations + 1))


def change_points(
    values: list[float] | np.ndarray,
    *,
    alpha: float = ALPHA,
    min_change: float = MIN_CHANGE,
    permutations: int = PERMUTATIONS,
    min_segment: int = MIN_SEGMENT,
    seed: int = 0,
) -> list[ChangePoint]:
    """The change points of one series, in order."""
    series = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    found: list[ChangePoint] = []
    segments = [(0, series.size)]
    while segments:
        lo, hi = segments.pop()
        if hi - lo < 2 * min_segment:
            continue
        split = _best_split(series[lo:hi], rng, permutations, min_segment)
        if split is None:
            continue
        tau, p = split
        before, after = (
            float(np.median(series[lo : lo + tau])),
            float(np.median(series[lo + tau : hi])),
        )
        big_enough = before and abs(after / before - 1) >= min_change
        if p <= alpha and big_enough:
            found.append(ChangePoint(lo + tau, p, before, after))
            segments += [(lo, lo + tau), (lo + tau, hi)]
    return sorted(found, key=lambda c: c.index)


@dataclass(frozen=True)
class Change:
    """A change point in a case's history, named by the run that starts the new level."""

    case_id: str
    metric: str
    run_id: str
    before: float
    after: float
    ratio: float
    p_value: float
    runs: int  # the history's length


def history(
    runs: list[RunRecord], rows_of: Callable[[str], list[ResultRow]], metric: str
) -> dict[str, list[tuple[str, float]]]:
    """Per case, (run id, the run's value: the median over its rounds) in run order, over
    comparable runs (``history.comparable``: same suite and hardware as the latest suite run,
    no ab comparison's runs)."""
    suites = [r for r in runs if r.metadata.kind == "suite" and r.metadata.ab is None]
    if not suites:
        return {}
    latest = suites[-1]
    same = [r for r in suites if r is latest or comparable(r, latest)]
    values = run_values(same, rows_of, (metric,))
    return {case_id: series[metric] for case_id, series in values.items()}


def find_changes(
    runs: list[RunRecord],
    rows_of: Callable[[str], list[ResultRow]],
    metric: str = "energy_per_token",
    *,
    alpha: float = ALPHA,
    min_change: float = MIN_CHANGE,
) -> tuple[list[Change], list[str]]:
    """(changes in every case with enough history, the cases without enough of it)."""
    changes, short = [], []
    for case_id, points in history(runs, rows_of, metric).items():
        if len(points) < MIN_HISTORY:
            short.append(case_id)
            continue
        values = [v for _, v in points]
        for c in change_points(values, alpha=alpha, min_change=min_change):
            changes.append(
                Change(
                    case_id,
                    metric,
                    points[c.index][0],
                    c.before,
                    c.after,
                    c.ratio,
                    c.p_value,
                    len(points),
                )
            )
    return changes, short
