"""A level's figures from its trace: requests by outcome, tokens, throughput and latencies.

Tokens count the answers of the ``ok`` requests (those of failed requests are counted as
failures, by status, not as output). The steady window gets a share of each request's
tokens: with ``n`` chunks of text of which ``m`` arrived inside ``[steady_start, steady_end]``,

    steady_tokens = Σ_requests output_tokens · m / n

or, when the server said how many tokens each chunk carried, the sum of those of the chunks
inside. Throughput is tokens over seconds: the whole level's, and the steady window's (the
one the energy is measured over).

Latencies are over the ``ok`` requests of the whole level: time to first token, end-to-end,
and inter-token latency with every request's gaps between chunks pooled (vLLM's benchmark
takes them so). Percentiles are numpy's with linear interpolation between order statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carbonbench.serving.client import RequestRecord
from carbonbench.serving.load import LevelTrace

QUANTILES = (50, 90, 99)


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float


def percentiles(values: Sequence[float]) -> Percentiles | None:
    """p50, p90 and p99 (None for no values)."""
    if not values:
        return None
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), QUANTILES, method="linear")
    return Percentiles(float(p50), float(p90), float(p99))


def steady_tokens(record: RequestRecord, start: float, end: float) -> float:
    """The request's output tokens inside ``[start, end]`` (see the module's docstring)."""
    times = record.chunk_times
    if not times:
        return 0.0
    inside = [start <= t <= end for t in times]
    if len(record.chunk_tokens) == len(times):
        return float(sum(k for k, kept in zip(record.chunk_tokens, inside, strict=True) if kept))
    return record.output_tokens * sum(inside) / len(times)


@dataclass(frozen=True)
class LevelStats:
    counts: dict[str, int]
    output_tokens: int
    prompt_tokens: int  # those the server reported (tokens_source "usage")
    steady_output_tokens: float
    level_s: float
    steady_s: float
    tokens_source: str  # usage | stream | mixed | none (no ok request)
    ttft: Percentiles | None
    itl: Percentiles | None
    e2e: Percentiles | None
    aborted: bool = False

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.level_s if self.level_s > 0 else 0.0

    @property
    def steady_tokens_per_s(self) -> float:
        return self.steady_output_tokens / self.steady_s if self.steady_s > 0 else 0.0

    def to_extra(self) -> dict[str, float | int | str]:
        """Flat figures to store with the level's result; a latency's percentiles are left out
        when no ok request gave one."""
        extra: dict[str, float | int | str] = {"requests": self.requests}
        extra.update({f"requests_{status}": n for status, n in self.counts.items()})
        extra.update(
            output_tokens=self.output_tokens,
            prompt_tokens=self.prompt_tokens,
            steady_output_tokens=self.steady_output_tokens,
            tokens_source=self.tokens_source,
            level_s=self.level_s,
            steady_s=self.steady_s,
            tokens_per_s=self.tokens_per_s,
            steady_tokens_per_s=self.steady_tokens_per_s,
            aborted=int(self.aborted),
        )
        for name, figures in (("ttft", self.ttft), ("itl", self.itl), ("e2e", self.e2e)):
            if figures is not None:
                extra[f"{name}_p50_s"] = figures.p50
                extra[f"{name}_p90_s"] = figures.p90
                extra[f"{name}_p99_s"] = figures.p99
        return extra


def tokens_source(records: Sequence[RequestRecord]) -> str:
    sources = {record.tokens_source for record in records}
    if not sources:
        return "none"
    return sources.pop() if len(sources) == 1 else "mixed"


def level_stats(trace: LevelTrace) -> LevelStats:
    ok = [record for record in trace.records if record.status == "ok"]
    start, end = trace.steady_start, trace.steady_end
    steady = 0.0
    if start is not None and end is not None:
        steady = sum(steady_tokens(record, start, end) for record in ok)
    return LevelStats(
        counts=trace.counts(),
        output_tokens=sum(record.output_tokens for record in ok),
        prompt_tokens=sum(record.prompt_tokens or 0 for record in ok),
        steady_output_tokens=steady,
        level_s=trace.ended_at - trace.started_at,
        steady_s=trace.steady_s,
        tokens_source=tokens_source(ok),
        ttft=percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
        itl=percentiles([gap for record in ok for gap in record.itl_s]),
        e2e=percentiles([record.e2e_s for record in ok]),
        aborted=trace.aborted,
    )
