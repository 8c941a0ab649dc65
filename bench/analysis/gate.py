"""The statistics of the regression gate: one verdict for one metric of one case.

Every test is on the log scale, where a ratio is a difference, and asks whether the change is
beyond the threshold t, not merely whether there is one: H0 says the log-ratio is at most
log(1 + t), and a regression needs the one-sided p of that test at most alpha, which is the
same as the lower bound of the ratio's (1 - 2 alpha) confidence interval lying beyond 1 + t.
Improvements mirror this with log(1 - t). What the log-ratio's spread is estimated from is
the noise a change has to beat:

- ``history``: three or more earlier comparable runs (same suite, case and hardware). Their
  run values (one each, the median over rounds) give the between-run spread s. Two runs
  differ by s·√2; with at least ``LEVEL_RUNS`` earlier runs and the baseline the latest of
  them (the nightly gate), the current run is judged against the history's level since its
  last change point, by a prediction interval: s·√(1 + 1/n) around that level's mean.
- ``pairs``: ``carbonbench ab``: the per-pair log-ratios of alternating base and head runs,
  by their ranks (Wilcoxon's signed-rank test), which one wildly disturbed run cannot swamp.
- ``unknown``: no history. The rounds of the two runs (fresh processes, Welch's t on their
  logs) are all the evidence there is, and back-to-back runs on a shared machine differ by
  more than rounds suggest. So the threshold becomes max(t, ``UNKNOWN_NOISE``): a shift
  inside that is at most ``inconclusive``, while a change far beyond it (a doubling) is
  still a regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carbonbench.analysis.changes import change_points

ALPHA = 0.05  # one-sided, split across the cases compared (and across ab's looks)
UNKNOWN_NOISE = 0.3  # the threshold's floor where the between-run noise is unknown
MIN_HISTORY_RUNS = 3  # earlier runs for a between-run spread
LEVEL_RUNS = 10  # earlier runs for the nightly rule (a level since the last change point)
MIN_ROUNDS = 3  # rounds a side when the rounds are the only evidence
TINY = 1e-9  # the spread used when the values do not vary at all


@dataclass(frozen=True)
class Judgement:
    verdict: str  # regression | improvement | unchanged | inconclusive | no data
    ratio: float | None  # current over baseline (geometric means on the log scale)
    ci: tuple[float, float] | None  # the ratio's (1 - 2 alpha) confidence interval
    p_value: float | None  # one-sided, of the change beyond the threshold
    threshold: float  # the t actually applied
    test: str
    noise: str  # history | pairs | unknown | exact | none


def _logs(values: Sequence[float]) -> np.ndarray | None:
    array = np.asarray(values, dtype=float)
    return np.log(array) if array.size and np.all(array > 0) else None


def decide(
    estimate: float, se: float, df: float, threshold: float, alpha: float
) -> tuple[str, float, tuple[float, float], float | None]:
    """(verdict, ratio, CI, p) for a log-ratio ``estimate`` with standard error ``se``."""
    from scipy import stats  # here, so that commands which judge nothing start without it

    se = max(se, TINY)
    quantile = float(stats.t.ppf(1 - alpha, df))
    ci = (math.exp(estimate - quantile * se), math.exp(estimate + quantile * se))
    ratio = math.exp(estimate)
    up = math.log1p(threshold)
    if estimate > up:
        p = float(stats.t.sf((estimate - up) / se, df))
        return ("regression" if p <= alpha else "unchanged"), ratio, ci, p
    down = math.log1p(-threshold) if threshold < 1 else -math.inf
    if estimate < down:
        p = float(stats.t.cdf((estimate - down) / se, df))
        return ("improvement" if p <= alpha else "unchanged"), ratio, ci, p
    return "unchanged", ratio, ci, None


def judge_runs(
    baseline: Sequence[float],
    current: Sequence[float],
    threshold: float,
    alpha: float = ALPHA,
    *,
    history: Sequence[float] = (),
    level: bool = False,
    unknown_noise: float = UNKNOWN_NOISE,
) -> Judgement:
    """Two runs, given as their round values, and the earlier runs' values (``history``)."""
    b, c = _logs(baseline), _logs(current)
    if b is None or c is None:
        return Judgement("no data", None, None, None, threshold, "no values", "none")
    h = _logs(history) if len(history) >= MIN_HISTORY_RUNS else None
    if h is not None and level and h.size >= LEVEL_RUNS:
        cuts = [cp.index for cp in change_points(np.exp(h))]
        start = cuts[-1] if cuts and h.size - cuts[-1] >= MIN_HISTORY_RUNS else 0
        segment = h[start:]
        se = float(segment.std(ddof=1)) * math.sqrt(1 + 1 / segment.size)
        estimate = math.log(float(np.median(current))) - float(segment.mean())
        verdict, ratio, ci, p = decide(estimate, se, segment.size - 1, threshold, alpha)
        test = (
            f"prediction interval of the level of the last {segment.size} runs (those since "
            f"the last change point in {h.size} earlier runs)"
        )
        return Judgement(verdict, ratio, ci, p, threshold, test, "history")
    if h is not None:
        se = float(h.std(ddof=1)) * math.sqrt(2)
        estimate = math.log(float(np.median(current)) / float(np.median(baseline)))
        verdict, ratio, ci, p = decide(estimate, se, h.size - 1, threshold, alpha)
        test = f"t-test against the between-run spread of {h.size} earlier runs"
        return Judgement(verdict, ratio, ci, p, threshold, test, "history")
    if b.size < MIN_ROUNDS or c.size < MIN_ROUNDS:
        ratio = math.exp(float(c.mean() - b.mean()))
        test = f"needs >= {MIN_ROUNDS} rounds a side, or {MIN_HISTORY_RUNS} earlier runs"
        return Judgement("no data", ratio, None, None, threshold, test, "unknown")
    estimate, se, df = welch(b, c)
    floor = max(threshold, unknown_noise)
    verdict, ratio, ci, p = decide(estimate, se, df, floor, alpha)
    test = (
        f"Welch's t on the rounds' logs; between-run noise unknown, so the threshold is "
        f"max(t, {unknown_noise:g})"
    )
    if verdict == "unchanged" and floor > threshold:
        inner, *_ = decide(estimate, se, df, threshold, alpha)
        if inner != "unchanged":  # beyond t on the rounds alone: inside the unknown noise
            verdict = "inconclusive"
    return Judgement(verdict, ratio, ci, p, floor, test, "unknown")


def welch(b: np.ndarray, c: np.ndarray) -> tuple[float, float, float]:
    """(difference of means, its standard error, Welch-Satterthwaite degrees of freedom)."""
    vb, vc = b.var(ddof=1) / b.size, c.var(ddof=1) / c.size
    se = math.sqrt(vb + vc)
    if se == 0:
        return float(c.mean() - b.mean()), 0.0, float(b.size + c.size - 2)
    df = (vb + vc) ** 2 / (vb**2 / (b.size - 1) + vc**2 / (c.size - 1))
    return float(c.mean() - b.mean()), se, float(df)


def judge_pairs(
    base: Sequence[float], head: Sequence[float], threshold: float, alpha: float = ALPHA
) -> Judgement:
    """``carbonbench ab``: Wilcoxon's signed-rank test on the per-pair log-ratios head/base,
    one-sided, against log(1 + t). Ranks, not values: one wildly disturbed run (a stalled
    process 30 times slower) counts as one pair, where it would swamp a t-test's spread. The
    ratio is the Hodges-Lehmann estimate (the median of the pairwise means of the log-ratios)
    and its interval the test's own, from the same means, so that p <= alpha exactly when the
    interval clears 1 + t. n pairs reach at best p = 2^-n."""
    b, h = _logs(base), _logs(head)
    if b is None or h is None or b.size != h.size or b.size < 2:
        return Judgement("no data", None, None, None, threshold, "needs >= 2 pairs", "none")
    d = h - b
    n = d.size
    means = np.sort((d[:, None] + d[None, :])[np.triu_indices(n)] / 2)  # Walsh averages
    tail = _signed_rank_tail(n)  # tail[k] = P(T+ >= k) with no change
    estimate = float(np.median(means))
    # the c-th largest mean is the lower bound: the smallest c with P(T+ >= c) <= alpha
    reachable = np.flatnonzero(tail[: means.size + 1] <= alpha)  # c in 1 .. n(n+1)/2
    ci = None
    if reachable.size:
        c = int(reachable[0])
        ci = (math.exp(means[means.size - c]), math.exp(means[c - 1]))
    up = math.log1p(threshold)
    down = math.log1p(-threshold) if threshold < 1 else -math.inf
    verdict, p = "unchanged", None
    if estimate > up:
        p = float(tail[int(np.sum(means > up))])
        verdict = "regression" if p <= alpha else "unchanged"
    elif estimate < down:
        p = float(tail[int(np.sum(means < down))])
        verdict = "improvement" if p <= alpha else "unchanged"
    test = (
        f"Wilcoxon signed-rank test on {n} per-pair log-ratios (their sd s = "
        f"{float(d.std(ddof=1)):.3f})"
    )
    if ci is None:
        test += f"; {n} pairs cannot reach p <= {alpha:.2g} (needs {min_pairs(alpha)})"
    return Judgement(verdict, math.exp(estimate), ci, p, threshold, test, "pairs")


def _signed_rank_tail(n: int) -> np.ndarray:
    """P(T+ >= k) for k = 0 .. n(n+1)/2 + 1, T+ Wilcoxon's signed-rank statistic of n pairs
    with no change: each rank's sign a fair coin (exact; ties have probability 0)."""
    total = n * (n + 1) // 2
    dist = np.zeros(total + 1)
    dist[0] = 1.0
    for rank in range(1, n + 1):
        shifted = np.zeros_like(dist)
        shifted[rank:] = dist[:-rank]
        dist = (dist + shifted) / 2
    return np.append(np.cumsum(dist[::-1])[::-1], 0.0)


def min_pairs(alpha: float) -> int:
    """The fewest pairs whose signed-rank test can reach p <= alpha (all n pairs one way:
    p = 2^-n)."""
    return max(2, math.ceil(math.log2(1 / alpha)))


def judge_exact(baseline: Sequence[float], current: Sequence[float]) -> Judgement:
    """FLOPs per step, parameters: any difference counts."""
    if not len(baseline) or not len(current):
        return Judgement("no data", None, None, None, 0.0, "no values", "none")
    b, c = float(np.median(baseline)), float(np.median(current))
    ratio = c / b if b else (math.inf if c else 1.0)
    verdict = "unchanged" if c == b else ("regression" if c > b else "improvement")
    return Judgement(verdict, ratio, None, None, 0.0, "exact", "exact")
