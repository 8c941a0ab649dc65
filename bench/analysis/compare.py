"""The regression gate: compare two runs (or two pytest-benchmark JSON files) case by case.

Each run gives one value per round (the median of that round's windows), never its windows:
the windows of one process share its conditions. A metric regresses when the change is
beyond its threshold t (default 5%; per metric, per case glob) with p <= alpha, against the
noise the store knows of (``carbonbench.analysis.gate``): the between-run spread of earlier
comparable runs (``carbonbench.analysis.history``), the level of a long history since its last
change point (the nightly gate), or, with no history, the rounds alone with the threshold raised
to the unknown-noise floor. alpha is split across the cases compared, and exact metrics (FLOPs
per step, parameters) change on any difference (``carbonbench.analysis.verdicts``).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbonbench.analysis.gate import ALPHA, UNKNOWN_NOISE, Judgement, judge_runs
from carbonbench.analysis.history import earlier_runs, run_values
from carbonbench.analysis.verdicts import (
    Cases,
    Comparison,
    Evidence,
    Verdict,
    first_errors,
    judge_cases,
)
from carbonbench.energy.hardware import Hardware
from carbonbench.errors import InputError
from carbonbench.results.metrics import round_metrics
from carbonbench.results.store import Store
from carbonbench.suites.thresholds import (
    METRICS,
    STATISTICAL,
    Thresholds,
    ThresholdsError,
    thresholds_from_table,
)


class CompareError(InputError):
    """Unusable input: exit status 2."""


@dataclass
class Side:
    """One side of a comparison: samples per case and metric, and what produced them."""

    name: str
    samples: dict[str, dict[str, list[float]]]
    hardware: dict[str, Any]
    suite: str | None
    # case -> metric -> earlier comparable runs' values (median over rounds), oldest first
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    previous: str | None = None  # the latest earlier comparable run: the nightly baseline
    carbon: str | None = None  # intensity and PUE, to tell settings changes from code changes
    suite_text: str | None = None  # its [thresholds], if any, apply
    failed: dict[str, str] = field(default_factory=dict)  # case -> its first error


# -- loading ----------------------------------------------------------------------------


def side_from_store(store: Store, ref: str) -> Side:
    run_id = store.resolve(ref)
    run = store.run(run_id)
    rows = store.rows(run_id)
    samples = {  # one value per round: rounds are the samples, never windows
        case_id: {m: v for m, v in metrics.items() if m in METRICS}
        for case_id, metrics in round_metrics(rows).items()
    }
    earlier = earlier_runs(store.runs(), run)
    history = {
        case_id: {metric: [value for _, value in points] for metric, points in metrics.items()}
        for case_id, metrics in run_values(earlier, store.rows, STATISTICAL).items()
    }
    carbon = run.carbon
    return Side(
        run_id,
        samples,
        run.hardware.comparable(),
        run.suite_name,
        history,
        earlier[-1].run_id if earlier else None,
        carbon.describe() if carbon is not None else None,
        run.suite_text,
        first_errors(rows),
    )


def _numbers(value: Any) -> list[float] | None:
    """A list of finite numbers, or None if ``value`` is not one."""
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        return None
    return [float(v) for v in value]


def side_from_benchmark_json(path: Path) -> Side:
    """A pytest-benchmark JSON file: energy, time and CO2e per unit of work where the
    ``energy_benchmark`` fixture wrote them, else the time per call of a plain benchmark."""
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise CompareError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise CompareError(f"{path} is not JSON ({error})") from None
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list):
        raise CompareError(
            f'{path} is not a pytest-benchmark JSON file: it needs a list under "benchmarks" '
            "(write it with pytest --benchmark-json)"
        )
    samples: dict[str, dict[str, list[float]]] = {}
    carbon: set[str] = set()
    for number, bench in enumerate(benchmarks):
        where = f"{path}: benchmarks[{number}]"
        if not isinstance(bench, dict) or not isinstance(bench.get("fullname"), str):
            raise CompareError(f'{where} is not a benchmark (no "fullname")')
        extra = bench.get("extra_info") or {}
        if not isinstance(extra, dict):
            raise CompareError(f"{where}: extra_info must be an object, got {extra!r}")
        if "energy_j_per_round" in extra:
            samples[bench["fullname"]] = _energy_samples(where, extra)
            carbon.add(
                f"{extra.get('carbon_intensity_g_per_kwh')} g/kWh "
                f"({extra.get('carbon_intensity_source')}), PUE {extra.get('pue')}"
            )
            continue
        stats = bench.get("stats")
        if not isinstance(stats, dict):
            raise CompareError(f"{where} has neither energy (extra_info) nor stats")
        times = _numbers(stats.get("data"))  # every round, with --benchmark-save-data
        if times is None:
            median = _numbers([stats.get("median")])
            if median is None:
                raise CompareError(f"{where}: stats.median must be a number")
            times = median  # one value: compared, but no test can be made on it
        samples[bench["fullname"]] = {"time_per_call": times}
    if not samples:
        raise CompareError(f"{path} holds no benchmarks")
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    ours = machine.get("carbonbench") if isinstance(machine.get("carbonbench"), dict) else {}
    hardware = ours.get("hardware") if isinstance(ours.get("hardware"), dict) else None
    if hardware is None:
        cpu = machine.get("cpu")
        hardware = {"cpu": cpu.get("brand_raw") if isinstance(cpu, dict) else cpu}
    setting = "; ".join(sorted(carbon)) or None
    return Side(str(path), samples, Hardware.from_dict(hardware).comparable(), None, carbon=setting)


def _energy_samples(where: str, extra: dict[str, Any]) -> dict[str, list[float]]:
    energy = _numbers(extra.get("energy_j_per_round"))
    durations = _numbers(extra.get("duration_s_per_round") or [])
    co2e = _numbers(extra.get("co2e_g_per_round") or [])
    units = extra.get("units_per_round") or 1
    if energy is None or durations is None or co2e is None:
        raise CompareError(f"{where}: extra_info's *_per_round values must be lists of numbers")
    if not isinstance(units, int | float) or isinstance(units, bool) or not units > 0:
        raise CompareError(f"{where}: extra_info.units_per_round must be a positive number")
    return {
        "energy_per_token": [e / units for e in energy],
        "time_per_token": [d / units for d in durations],
        "co2e_per_1k_tokens": [1000 * c / units for c in co2e],
    }


def load_side(ref: str, db: str | Path) -> Side:
    """A run of the store (id, latest, latest~N), or a pytest-benchmark ``.json`` file."""
    path = Path(ref)
    if path.suffix == ".json":
        if not path.is_file():
            raise CompareError(f"no file {path}: give a pytest-benchmark JSON file or a run")
        return side_from_benchmark_json(path)
    with Store(db, create=False, readonly=True) as store:
        return side_from_store(store, ref)


def load_thresholds(
    path: Path | None,
    pyproject: Path = Path("pyproject.toml"),
    suite_text: str | None = None,
) -> Thresholds:
    """The first that exists: ``--thresholds FILE`` (its [thresholds] table; a suite file
    works), the [thresholds] of the current run's suite, [tool.carbonbench.thresholds] of
    pyproject.toml in the working directory."""
    table: dict[str, Any] = {}
    source = ""
    suite_table = tomllib.loads(suite_text).get("thresholds") if suite_text else None
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise CompareError(f"cannot read thresholds from {path}: {error}") from None
        table, source = data.get("thresholds", {}), str(path)
    elif suite_table is not None:
        table, source = suite_table, "the suite's [thresholds]"
    elif pyproject.is_file():
        data = tomllib.loads(pyproject.read_text())
        table = data.get("tool", {}).get("carbonbench", {}).get("thresholds", {})
        source = f"{pyproject} [tool.carbonbench.thresholds]"
    try:
        return thresholds_from_table(table, source)
    except ThresholdsError as error:
        raise CompareError(str(error)) from None


# -- verdicts ---------------------------------------------------------------------------


def compare(
    baseline: Side,
    current: Side,
    thresholds: Thresholds | None = None,
    *,
    alpha: float = ALPHA,
    allow_hardware_mismatch: bool = False,
    metrics: Iterable[str] = METRICS,
    unknown_noise: float = UNKNOWN_NOISE,
) -> Comparison:
    """The verdicts of ``current`` against ``baseline``: on their rounds, and on the current
    run's history where it has one (``judge_runs``)."""
    thresholds = thresholds or Thresholds()
    metrics = tuple(metrics)
    if unknown := sorted(set(metrics) - set(METRICS)):
        raise CompareError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    notes = []
    if baseline.hardware != current.hardware:
        message = f"different hardware: baseline {baseline.hardware}, current {current.hardware}"
        if not allow_hardware_mismatch:
            raise CompareError(message + "; pass --allow-hardware-mismatch to compare anyway")
        notes.append(message + " (compared because --allow-hardware-mismatch was given)")
    if baseline.suite != current.suite:
        notes.append(f"different suites: baseline {baseline.suite!r}, current {current.suite!r}")
    if baseline.carbon != current.carbon:
        notes.append(
            f"different carbon settings ({baseline.carbon} vs {current.carbon}): "
            "co2e_per_1k_tokens moves with them, not only with the code, so it is left out"
        )
        metrics = tuple(m for m in metrics if m != "co2e_per_1k_tokens")
    if baseline.name == current.name:
        notes.append(f"baseline and current are the same run ({current.name}): nothing can differ")
    if not (set(baseline.samples) | set(baseline.failed)) & (
        set(current.samples) | set(current.failed)
    ):
        raise CompareError(
            f"nothing to compare: no case is in both {baseline.name} "
            f"({len(baseline.samples)} cases) and {current.name} ({len(current.samples)} cases)"
        )

    def evidence(case_id: str, metric: str) -> Evidence:
        return Evidence(
            baseline.samples[case_id].get(metric, []),
            current.samples[case_id].get(metric, []),
            current.history.get(case_id, {}).get(metric, []),
        )

    def judge(found: Evidence, threshold: float, split: float) -> Judgement:
        return judge_runs(
            found.baseline,
            found.current,
            threshold,
            split,
            history=found.history,
            level=baseline.name == current.previous,
            unknown_noise=unknown_noise,
        )

    result = judge_cases(
        Cases(baseline.name, list(baseline.samples), baseline.failed),
        Cases(current.name, list(current.samples), current.failed),
        evidence,
        judge,
        metrics=metrics,
        thresholds=thresholds,
        alpha=alpha,
        notes=notes,
    )
    unknown = sorted({v.case_id for v in result.verdicts if v.noise == "unknown"})
    if unknown:
        result.notes.append(
            f"between-run noise unknown for {len(unknown)} case(s): the store has fewer than 3 "
            f"earlier comparable runs, so only a change beyond {unknown_noise:.0%} with the "
            "rounds' support is a regression (a smaller one is at most inconclusive)"
        )
    return result


def change_text(v: Verdict) -> str:
    """``+12.0% [+3.1%, +21.9%]``: the ratio as a change, with its interval."""
    if v.ratio is None:
        return ""
    text = f"{100 * (v.ratio - 1):+.1f}%"
    if v.ci_low is not None and v.ci_high is not None:
        text += f" [{100 * (v.ci_low - 1):+.1f}%, {100 * (v.ci_high - 1):+.1f}%]"
    return text


METHOD = (
    "Regression: a change beyond the threshold t with one-sided p <= alpha (split across the "
    "cases), on one value per round; against the between-run spread of earlier comparable "
    "runs where the store has 3 or more, else with t raised to the unknown-noise floor. "
    "Intervals are (1 - 2 alpha) for the ratio."
)


def evidence(v: Verdict) -> str:
    """What a verdict stands on: rounds a side, earlier runs, or pairs."""
    if v.noise == "exact":
        return "exact"
    if v.noise == "pairs":
        return f"{v.n_current} pairs"
    text = f"{v.n_baseline}+{v.n_current} rounds"
    return text + (f", {v.n_history} runs" if v.noise == "history" else ", noise unknown")


def markdown(result: Comparison, title: str = "carbonbench compare", method: str = METHOD) -> str:
    """A summary for a pull-request comment or $GITHUB_STEP_SUMMARY."""
    lines = [
        f"### {title}: {len(result.regressions)} regression(s)"
        + (f", {len(result.failed)} case(s) failing" if result.failed else ""),
        "",
        f"Baseline `{result.baseline}`, current `{result.current}`.",
    ]
    shown = [v for v in result.verdicts if v.verdict != "unchanged"] or result.verdicts
    if shown:
        lines += [
            "",
            "| case | metric | baseline | current | change [interval] | p | evidence | verdict |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
    for v in shown:
        p = f"{v.p_value:.3g}" if v.p_value is not None else ""
        icon = {"regression": "🔴", "improvement": "🟢", "inconclusive": "🟡"}.get(v.verdict, "")
        lines.append(
            f"| `{v.case_id}` | {v.metric} | {_num(v.baseline)} | {_num(v.current)} | "
            f"{change_text(v)} | {p} | {evidence(v)} | {icon} {v.verdict} |"
        )
    if result.failed:
        lines += ["", "Failing now, not failing in the baseline:", ""]
        lines += [f"- 🔴 `{case}`: {error}" for case, error in result.failed.items()]
    if result.only_baseline:
        lines += ["", "Only in the baseline: " + ", ".join(f"`{c}`" for c in result.only_baseline)]
    if result.only_current:
        lines += [
            "",
            "Only in the current run: " + ", ".join(f"`{c}`" for c in result.only_current),
        ]
    if result.notes:
        lines += ["", *[f"- {note}" for note in result.notes]]
    lines += ["", method]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
