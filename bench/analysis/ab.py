"""``carbonbench ab``: the pull-request gate. Base and head run alternately on one machine and
are judged on their paired differences.

Each run is a fresh process of one round over the selected cases (``CMD run ... --rounds 1``),
in ABBA order (base-head, head-base, ...), so a machine that drifts during the comparison
moves both sides of a pair alike and cancels in the pair's log-ratio. Per case and metric,
the verdict is a one-sided Wilcoxon signed-rank test of the per-pair log-ratios head/base
against log(1 + t), with the Hodges-Lehmann ratio and its interval
(``carbonbench.analysis.gate.judge_pairs``): ranks, so one wildly disturbed run is one pair, not the
whole spread. A borderline result (beyond 1 + t, not yet significant) adds pairs: each further
look has about 1.6 times the pairs of the one before (6, 10, 16 by default), so a clear result
costs the default pairs and only a close one pays for more. alpha is split across the cases and
the looks (Bonferroni), so looking again never raises the false-alarm rate; n pairs reach at
best p = 2^-n, and a plan whose last look cannot reach its alpha is refused. All runs go to
one store, labelled ``base`` and ``head``, with the comparison's id in their metadata (``ab``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbonbench.analysis.gate import ALPHA, Judgement, judge_pairs, min_pairs
from carbonbench.analysis.verdicts import Cases, Comparison, Evidence, first_errors, judge_cases
from carbonbench.errors import InputError
from carbonbench.execution.protocol import IDLE_BASELINE_ENV, IdleBaseline
from carbonbench.results.metadata import AbTag
from carbonbench.results.metrics import EXACT, round_metrics
from carbonbench.results.runlog import RunLog
from carbonbench.results.store import Store
from carbonbench.signals import StopRequest
from carbonbench.suites.thresholds import Thresholds

METRICS = ("energy_per_token", "time_per_token", *EXACT)
PAIRS = 6
MAX_PAIRS = 16  # by default; with the looks at 6 and 10, three looks in all
GROWTH = 1.6  # pairs at a look over pairs at the look before
STDERR_LINES = 3


class AbError(InputError):
    """A side's command could not produce a run: exit status 2, never a verdict."""


class Interrupted(Exception):
    """Stopped by SIGINT or SIGTERM; the runs finished so far are stored."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@dataclass
class AbPlan:
    base: list[str]  # the command that runs carbonbench, split like a shell would
    head: list[str]
    run_args: list[str]  # forwarded to `run`: suite, filters, carbon options
    db: Path
    pairs: int = PAIRS
    max_pairs: int | None = None  # None: MAX_PAIRS (or pairs, if more)
    alpha: float = ALPHA
    thresholds: Thresholds = field(default_factory=Thresholds)
    metrics: tuple[str, ...] = METRICS

    def __post_init__(self) -> None:
        if self.max_pairs is None:
            self.max_pairs = max(MAX_PAIRS, self.pairs)
        if self.pairs < 2:
            raise InputError(f"--pairs must be at least 2 (a spread needs two), got {self.pairs}")
        if self.max_pairs < self.pairs:
            raise InputError(f"--max-pairs ({self.max_pairs}) is below --pairs ({self.pairs})")

    @property
    def schedule(self) -> list[int]:
        """The pairs at each look: ``pairs``, then about GROWTH times more each time, in
        whole ABBA blocks (even counts), up to ``max_pairs``."""
        assert self.max_pairs is not None
        counts = [self.pairs]
        while counts[-1] < self.max_pairs:
            counts.append(min(2 * math.ceil(counts[-1] * GROWTH / 2), self.max_pairs))
        return counts

    @property
    def looks(self) -> int:
        return len(self.schedule)


@dataclass
class Pair:
    index: int
    base: str  # run ids
    head: str


def order(index: int) -> tuple[str, str]:
    """ABBA: base first in even pairs, head first in odd ones."""
    return ("base", "head") if index % 2 == 0 else ("head", "base")


class Ab:
    def __init__(
        self, plan: AbPlan, on_event: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        self.plan = plan
        self.comparison_id = "ab-" + uuid.uuid4().hex[:12]
        self.pairs: list[Pair] = []
        self.on_event = on_event or (lambda kind, info: None)
        self._child: subprocess.Popen | None = None
        self._stop = StopRequest(on_first=self._forward_sigterm)
        self.idle: IdleBaseline | None = None  # measured by the first run, reused by the rest

    def run(self) -> Comparison:
        """Pairs until the verdicts are settled or ``max_pairs`` is reached. SIGINT or SIGTERM
        stops once the running side has stored what it finished (a terminal's Ctrl-C reaches
        it too; a SIGTERM is passed on to it); a second signal stops at once."""
        with self._stop.installed():
            for look, target in enumerate(self.plan.schedule):
                if look:
                    self.on_event("more", {"pairs": target})
                while len(self.pairs) < target:
                    self._pair(len(self.pairs))
                    if len(self.pairs) == 1:
                        self._check_can_fire(self.judge())
                result = self.judge()
                if not self.borderline(result):
                    break
            return result

    def _pair(self, index: int) -> None:
        ids: dict[str, str] = {}
        for side in order(index):
            self.on_event("side", {"pair": index, "side": side})
            ids[side] = self._run_side(side, index)
        self.pairs.append(Pair(index, ids["base"], ids["head"]))

    def _run_side(self, side: str, index: int) -> str:
        command = self.plan.base if side == "base" else self.plan.head
        argv = [*command, "run", *self.plan.run_args]
        argv += ["--rounds", "1", "--db", str(self.plan.db), "--label", side, "--json"]
        env = os.environ | ({IDLE_BASELINE_ENV: self.idle.to_env()} if self.idle else {})
        try:
            self._child = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        except OSError as error:
            raise AbError(f"cannot start the {side} command {command[0]!r}: {error}") from None
        try:
            out, err = self._child.communicate()
        finally:
            code, self._child = self._child.returncode, None
        if self._stop.requested or code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            by_code = "SIGTERM" if code in (143, -signal.SIGTERM) else "SIGINT"
            raise Interrupted(self._stop.signal or by_code)
        try:
            run_id = json.loads(out)["run_id"]
        except (ValueError, KeyError, TypeError):
            tail = " | ".join(err.strip().splitlines()[-STDERR_LINES:]) or "no output"
            raise AbError(
                f"the {side} command `{' '.join(argv)}` made no run (exit {code}): {tail}"
            ) from None
        with Store(self.plan.db, create=False) as store:
            RunLog.tag(store, run_id, AbTag(self.comparison_id, side, index))
            idle_w = store.run(run_id).metadata.idle_w
        if self.idle is None and idle_w:  # both sides run on this machine: once is enough
            source = f"run {run_id} ({side} of pair {index + 1})"
            self.idle = IdleBaseline(idle_w, source)
        self.on_event("stored", {"pair": index, "side": side, "run_id": run_id, "exit": code})
        return run_id

    def _check_can_fire(self, result: Comparison) -> None:
        """A plan whose last look cannot reach its alpha is a gate that cannot fire: refused
        once the first pair has shown how many cases share alpha."""
        alphas = [v.alpha for v in result.verdicts if v.metric not in EXACT]
        assert self.plan.max_pairs is not None
        if alphas and self.plan.max_pairs < (needed := min_pairs(min(alphas))):
            raise AbError(
                f"--max-pairs {self.plan.max_pairs} can never show a regression: alpha per "
                f"test is {min(alphas):.2g} (split across cases and looks) and n pairs reach "
                f"at best p = 2^-n; give --max-pairs {needed} or more"
            )

    def _forward_sigterm(self, name: str) -> None:
        """A SIGTERM (CI cancelling the job) reaches only this process: pass it on."""
        child = self._child
        if name == "SIGTERM" and child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    # -- the verdict ----------------------------------------------------------------------

    def judge(self) -> Comparison:
        """Verdicts over the pairs so far."""
        with Store(self.plan.db, create=False, readonly=True) as store:
            base = [measured(store, p.base) for p in self.pairs]
            head = [measured(store, p.head) for p in self.pairs]
            runs = [store.run(run_id) for p in self.pairs for run_id in (p.base, p.head)]
        result = paired_comparison(base, head, self.plan)
        if self.idle is not None:
            reused = sum(r.metadata.idle_source == self.idle.source for r in runs)
            result.notes.append(
                f"idle baseline measured once, by {self.idle.source}, and reused by {reused} "
                "later run(s) on this machine (runs of versions that do not take it measured "
                "their own)"
            )
        result.notes.insert(
            0,
            f"{len(self.pairs)} pairs in ABBA order, one round each; comparison "
            f"{self.comparison_id} in {self.plan.db}",
        )
        return result

    def borderline(self, result: Comparison) -> bool:
        """Whether more pairs could settle a verdict: beyond the threshold, not significant."""
        return any(
            v.noise == "pairs"
            and v.verdict == "unchanged"
            and v.ratio is not None
            and v.ratio > 1 + v.threshold
            for v in result.verdicts
        )


Measured = tuple[dict[str, dict[str, float]], dict[str, str]]


def measured(store: Store, run_id: str) -> Measured:
    """(case -> metric -> the run's value, case -> its first error)."""
    rows = store.rows(run_id)
    values = {
        case: {m: v[0] for m, v in metrics.items() if v}
        for case, metrics in round_metrics(rows).items()
    }
    return values, first_errors(rows)


def paired_comparison(base: list[Measured], head: list[Measured], plan: AbPlan) -> Comparison:
    """The verdicts of pairs ``(base[i], head[i])``: paired for statistical metrics, exact
    ones on any difference, alpha split across the cases and the plan's looks."""
    values = {"base": [v for v, _ in base], "head": [v for v, _ in head]}

    def evidence(case_id: str, metric: str) -> Evidence:
        return Evidence(*_paired(values["base"], values["head"], case_id, metric))

    def judge(found: Evidence, threshold: float, split: float) -> Judgement:
        return judge_pairs(found.baseline, found.current, threshold, split)

    return judge_cases(
        Cases("base", _ordered(values["base"]), _failures(base)),
        Cases("head", _ordered(values["head"]), _failures(head)),
        evidence,
        judge,
        metrics=plan.metrics,
        thresholds=plan.thresholds,
        alpha=plan.alpha,
        looks=plan.looks,
    )


def _failures(runs: list[Measured]) -> dict[str, str]:
    """Per case, the first error it had in any of ``runs``."""
    out: dict[str, str] = {}
    for _, errors in runs:
        for case, error in errors.items():
            out.setdefault(case, error)
    return out


def _ordered(runs: list[dict[str, dict[str, float]]]) -> list[str]:
    return list(dict.fromkeys(c for run in runs for c in run))


def _paired(
    base: list[dict[str, dict[str, float]]],
    head: list[dict[str, dict[str, float]]],
    case_id: str,
    metric: str,
) -> tuple[list[float], list[float]]:
    """The metric's values in the pairs where both sides measured it."""
    b, h = [], []
    for base_run, head_run in zip(base, head, strict=True):
        x, y = base_run.get(case_id, {}).get(metric), head_run.get(case_id, {}).get(metric)
        if x is not None and y is not None:
            b.append(x)
            h.append(y)
    return b, h


METHOD = (
    "Regression: the Hodges-Lehmann ratio head/base of paired runs (ABBA order, one round "
    "each) beyond 1 + t, by a one-sided Wilcoxon signed-rank test on the per-pair log-ratios "
    "with p <= alpha split across cases and looks. Intervals are (1 - 2 alpha) for the ratio."
)
