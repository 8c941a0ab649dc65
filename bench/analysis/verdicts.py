"""One verdict loop for both regression gates: ``compare`` (two runs, judged against the noise
the store knows of) and ``ab`` (alternating runs, judged on their pairs).

Every metric of every case both sides measured is judged; exact metrics (FLOPs per step,
parameters) change on any difference, the others by the gate's test of a change beyond the
threshold t with one-sided p <= alpha. With m cases compared over L looks (``ab`` looks again
at more pairs; ``compare`` once), each test gets alpha / (m L): by Bonferroni the chance that
any of them fires on identical code stays at most alpha. The gates differ only in what one
(case, metric) is judged on (``Evidence``) and by which test (``Judge``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from carbonbench.analysis.gate import Judgement, judge_exact
from carbonbench.results.store import ResultRow
from carbonbench.suites.thresholds import EXACT, Thresholds


@dataclass
class Verdict:
    case_id: str
    metric: str
    verdict: str  # regression | improvement | unchanged | inconclusive | no data
    baseline: float | None  # median of the rounds
    current: float | None
    ratio: float | None  # geometric mean (ab: Hodges-Lehmann), or over the history's level
    ci_low: float | None  # the ratio's (1 - 2 alpha) interval
    ci_high: float | None
    p_value: float | None
    threshold: float
    test: str
    noise: str  # history | pairs | unknown | exact | none
    n_baseline: int  # rounds (ab: pairs)
    n_current: int
    n_history: int  # earlier comparable runs
    alpha: float  # after the split across cases (and looks)


@dataclass
class Comparison:
    baseline: str
    current: str
    verdicts: list[Verdict]
    only_baseline: list[str]
    only_current: list[str]
    notes: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # failing now, not in the baseline

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "regression"]

    @property
    def passed(self) -> bool:
        """The gate: no regression, and no case failing now that did not fail in the baseline."""
        return not self.regressions and not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "current": self.current,
            "regressions": len(self.regressions),
            "verdicts": [asdict(v) for v in self.verdicts],
            "only_in_baseline": self.only_baseline,
            "only_in_current": self.only_current,
            "failed_in_current": self.failed,
            "passed": self.passed,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Evidence:
    """What one metric of one case is judged on."""

    baseline: list[float]  # compare: the baseline's round values; ab: base's value per pair
    current: list[float]  # compare: the current run's round values; ab: head's, pair by pair
    history: list[float] = field(default_factory=list)  # earlier comparable runs' values


# (evidence, threshold t, alpha after the split) -> the judgement of a statistical metric
Judge = Callable[[Evidence, float, float], Judgement]


@dataclass(frozen=True)
class Cases:
    """One side's cases: those it measured, in its order, and those that failed."""

    name: str
    measured: list[str]
    failed: dict[str, str]  # case -> its first error (``first_errors``)


def judge_cases(
    baseline: Cases,
    current: Cases,
    evidence: Callable[[str, str], Evidence],
    judge: Judge,
    *,
    metrics: Sequence[str],
    thresholds: Thresholds,
    alpha: float,
    looks: int = 1,
    notes: Iterable[str] = (),
) -> Comparison:
    """The verdicts on every metric of the cases both sides measured (in the current side's
    order), alpha split across those cases and ``looks``.

    A case failing now that did not fail in the baseline fails the gate, with its first error
    (even when other windows of it were measured, and even when the baseline lacks it: a new
    case that crashes is news); one failing on both sides is a note, not this change."""
    measured = set(baseline.measured)
    common = [c for c in current.measured if c in measured]
    split = alpha / max(1, len(common)) / looks  # Bonferroni across the cases and looks
    verdicts = []
    for case_id in common:
        for metric in metrics:
            found = evidence(case_id, metric)
            if not found.baseline and not found.current:
                continue
            if metric in EXACT:
                judgement = judge_exact(found.baseline, found.current)
            else:
                judgement = judge(found, thresholds.for_case(case_id, metric), split)
            verdicts.append(_verdict(case_id, metric, judgement, found, split))
    failed = {c: e for c, e in sorted(current.failed.items()) if c not in baseline.failed}
    notes = list(notes)
    if both := sorted(set(baseline.failed) & set(current.failed)):
        notes.append(
            f"failing in {baseline.name} and {current.name} alike (not this change): "
            + ", ".join(both)
        )
    return Comparison(
        baseline.name,
        current.name,
        verdicts,
        sorted(measured - set(current.measured) - set(current.failed)),
        sorted(set(current.measured) - measured),
        notes,
        failed,
    )


def first_errors(rows: Iterable[ResultRow]) -> dict[str, str]:
    """Per case with a failed window, the first one's error: the cause, where later windows
    of a broken case tend to fail of its consequences."""
    errors: dict[str, str] = {}
    for row in rows:
        if row.status != "ok":
            errors.setdefault(row.case_id, row.error or "failed")
    return errors


def _verdict(
    case_id: str, metric: str, judgement: Judgement, evidence: Evidence, alpha: float
) -> Verdict:
    ci = judgement.ci
    return Verdict(
        case_id,
        metric,
        judgement.verdict,
        float(np.median(evidence.baseline)) if evidence.baseline else None,
        float(np.median(evidence.current)) if evidence.current else None,
        judgement.ratio,
        ci[0] if ci else None,
        ci[1] if ci else None,
        judgement.p_value,
        judgement.threshold,
        judgement.test,
        judgement.noise,
        len(evidence.baseline),
        len(evidence.current),
        len(evidence.history),
        alpha,
    )
