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
- ``pairs``: ``carbonbench ab``: the per-pair log-ratios of alternating base and head runs.
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
        from carbonbench.changes import change_points

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
    """``carbonbench ab``: paired t-test on the per-pair log-ratios head/base, one-sided,
    against log(1 + t); the ratio is their geometric mean."""
    b, h = _logs(base), _logs(head)
    if b is None or h is None or b.size != h.size or b.size < 2:
        return Judgement("no data", None, None, None, threshold, "needs >= 2 pairs", "none")
    d = h - b
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    verdict, ratio, ci, p = decide(float(d.mean()), se, d.size - 1, threshold, alpha)
    test = f"paired t-test on {d.size} per-pair log-ratios"
    return Judgement(verdict, ratio, ci, p, threshold, test, "pairs")


def judge_exact(baseline: Sequence[float], current: Sequence[float]) -> Judgement:
    """FLOPs per step, parameters: any difference counts."""
    if not len(baseline) or not len(current):
        return Judgement("no data", None, None, None, 0.0, "no values", "none")
    b, c = float(np.median(baseline)), float(np.median(current))
    ratio = c / b if b else (math.inf if c else 1.0)
    verdict = "unchanged" if c == b else ("regression" if c > b else "improvement")
    return Judgement(verdict, ratio, None, None, 0.0, "exact", "exact")
