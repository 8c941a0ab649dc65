"""The regression gate: compare two runs (or two pytest-benchmark JSON files) case by case.

Each run gives one value per round (the median of that round's windows), never its windows:
the windows of one process share its conditions. A metric regresses when the change is
beyond its threshold t (default 5%; per metric, per case glob) with p <= alpha, against the
noise the store knows of (``carbonbench.analysis.gate``): the between-run spread of earlier comparable
runs, the level of a long history since its last change point (the nightly gate), or, with no
history, the rounds alone with the threshold raised to the unknown-noise floor. alpha is split
across the cases compared. Exact metrics (FLOPs per step, parameters) change on any difference.
"""

from __future__ import annotations

import fnmatch
import json
import math
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carbonbench.analysis.gate import ALPHA, UNKNOWN_NOISE, Judgement, judge_exact, judge_runs
from carbonbench.energy.hardware import Hardware
from carbonbench.errors import InputError
from carbonbench.results.metrics import EXACT, STATISTICAL, round_metrics
from carbonbench.results.store import RunRecord, Store

METRICS = STATISTICAL + EXACT
DEFAULT_THRESHOLD = 0.05
HISTORY_RUNS = 60  # earlier comparable runs read for the between-run noise


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
    failed: dict[str, str] = field(default_factory=dict)  # case -> error of a failed window


@dataclass
class Thresholds:
    default: dict[str, float] = field(default_factory=dict)
    cases: list[tuple[str, dict[str, float]]] = field(default_factory=list)  # (glob, overrides)

    def for_case(self, case_id: str, metric: str) -> float:
        value = self.default.get(metric, DEFAULT_THRESHOLD)
        for pattern, overrides in self.cases:
            if fnmatch.fnmatchcase(case_id, pattern) and metric in overrides:
                value = overrides[metric]
        return value


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
    noise: str  # history | unknown | exact | none
    n_baseline: int  # rounds
    n_current: int
    n_history: int  # earlier comparable runs
    alpha: float  # after the split across cases


@dataclass
class Comparison:
    baseline: str
    current: str
    verdicts: list[Verdict]
    only_baseline: list[str]
    only_current: list[str]
    notes: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # fine in the baseline, failing now

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "regression"]

    @property
    def passed(self) -> bool:
        """The gate: no regression, and no case failing now that the baseline measured."""
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


# -- loading ----------------------------------------------------------------------------


def side_from_store(store: Store, ref: str) -> Side:
    run_id = store.resolve(ref)
    runs = store.runs()
    run = store.run(run_id)
    rows = store.rows(run_id)
    errors: dict[str, str] = {}
    for row in rows:
        if row.status != "ok":
            errors.setdefault(row.case_id, row.error or "failed")
    samples = {  # one value per round: rounds are the samples, never windows
        case_id: {m: v for m, v in metrics.items() if m in METRICS}
        for case_id, metrics in round_metrics(rows).items()
    }
    earlier = [r for r in runs if r.seq < run.seq and comparable(r, run)][-HISTORY_RUNS:]
    history: dict[str, dict[str, list[float]]] = {}
    for past in earlier:
        for case_id, metrics in round_metrics(store.rows(past.run_id)).items():
            for metric, values in metrics.items():
                if metric in STATISTICAL and values:
                    history.setdefault(case_id, {}).setdefault(metric, [])
                    history[case_id][metric].append(float(np.median(values)))
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
        errors,
    )


def comparable(earlier: RunRecord, run: RunRecord) -> bool:
    """Whether ``earlier`` belongs to ``run``'s history: the same suite on the same hardware,
    measured by ``carbonbench run`` (not a command, a tracked block or an ab comparison)."""
    return (
        earlier.suite_name == run.suite_name
        and earlier.hardware.comparable() == run.hardware.comparable()
        and earlier.metadata.get("kind", "suite") == run.metadata.get("kind", "suite")
        and "ab" not in earlier.metadata
        and earlier.status in ("ok", "failed")
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
    return thresholds_from_table(table, source)


def thresholds_from_table(table: Any, source: str) -> Thresholds:
    """Thresholds from a [thresholds] table, every value checked (``source`` names it)."""
    if not isinstance(table, dict):
        raise CompareError(f"{source}: [thresholds] must be a table of metric = fraction")
    thresholds = Thresholds()
    for key, value in table.items():
        if key == "case":
            if not isinstance(value, list):
                raise CompareError(f"{source}: thresholds.case must be [[thresholds.case]] tables")
            for entry in value:
                if not isinstance(entry, dict):
                    raise CompareError(f"{source}: each [[thresholds.case]] must be a table")
                pattern = entry.get("match")
                if not isinstance(pattern, str):
                    raise CompareError(f"{source}: each [[thresholds.case]] needs match = GLOB")
                overrides = {k: _fraction(source, k, v) for k, v in entry.items() if k != "match"}
                thresholds.cases.append((pattern, overrides))
        else:
            thresholds.default[key] = _fraction(source, key, value)
    return thresholds


def _fraction(source: str, key: str, value: Any) -> float:
    if key not in METRICS:
        raise CompareError(f"{source}: unknown metric {key!r}; valid: {', '.join(METRICS)}")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 10:
        raise CompareError(f"{source}: {key} must be a fraction such as 0.05, got {value!r}")
    return float(value)


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
    common = [c for c in current.samples if c in baseline.samples]
    if not (set(baseline.samples) | set(baseline.failed)) & (
        set(current.samples) | set(current.failed)
    ):
        raise CompareError(
            f"nothing to compare: no case is in both {baseline.name} "
            f"({len(baseline.samples)} cases) and {current.name} ({len(current.samples)} cases)"
        )
    split = alpha / max(1, len(common))  # Bonferroni across the cases compared
    verdicts = []
    for case_id in common:
        for metric in metrics:
            b = baseline.samples[case_id].get(metric, [])
            c = current.samples[case_id].get(metric, [])
            if not b and not c:
                continue
            history = current.history.get(case_id, {}).get(metric, [])
            if metric in EXACT:
                judgement = judge_exact(b, c)
            else:
                judgement = judge_runs(
                    b,
                    c,
                    thresholds.for_case(case_id, metric),
                    split,
                    history=history,
                    level=baseline.name == current.previous,
                    unknown_noise=unknown_noise,
                )
            verdicts.append(verdict(case_id, metric, judgement, b, c, len(history), split))
    unknown = sorted({v.case_id for v in verdicts if v.noise == "unknown"})
    if unknown:
        notes.append(
            f"between-run noise unknown for {len(unknown)} case(s): the store has fewer than 3 "
            f"earlier comparable runs, so only a change beyond {unknown_noise:.0%} with the "
            "rounds' support is a regression (a smaller one is at most inconclusive)"
        )
    failed = {  # a case the baseline measured without failing, failing now (even part-way)
        c: e
        for c, e in sorted(current.failed.items())
        if c in baseline.samples and c not in baseline.failed
    }
    return Comparison(
        baseline.name,
        current.name,
        verdicts,
        sorted(set(baseline.samples) - set(current.samples) - set(failed)),
        sorted(set(current.samples) - set(baseline.samples)),
        notes,
        failed,
    )


def verdict(
    case_id: str,
    metric: str,
    judgement: Judgement,
    baseline: list[float],
    current: list[float],
    history: int,
    alpha: float,
) -> Verdict:
    ci = judgement.ci
    return Verdict(
        case_id,
        metric,
        judgement.verdict,
        float(np.median(baseline)) if baseline else None,
        float(np.median(current)) if current else None,
        judgement.ratio,
        ci[0] if ci else None,
        ci[1] if ci else None,
        judgement.p_value,
        judgement.threshold,
        judgement.test,
        judgement.noise,
        len(baseline),
        len(current),
        history,
        alpha,
    )


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
        lines += ["", "Measured in the baseline, failing now:", ""]
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
