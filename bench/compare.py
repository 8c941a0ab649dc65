"""The regression gate: compare two runs (or two pytest-benchmark JSON files) case by case.

A metric of a case *regresses* only when both hold:
  1. effect size: the ratio of medians, current / baseline, is beyond the threshold t (default
     5%; per metric, per case glob); and
  2. significance: the rounds show that the change itself exceeds t, not merely that the runs
     differ: a one-sided Mann-Whitney U test of the current rounds against the baseline's
     scaled by (1 + t) gives p <= alpha (default 0.05, the smallest p three rounds a side can
     give). With fewer than 3 rounds on a side the verdict is ``no data``.
The samples are rounds (one value each: the median of its windows), never windows: the windows
of one process share its conditions. Improvements mirror this with (1 - t).
Whole runs on a shared machine differ by more than their rounds suggest (other tenants,
thermals, clocks), which a test over rounds alone mistakes for change. Two defences: the
effect-size threshold, and a noise floor learnt from history. When the store holds at least
three earlier runs of a case, the threshold used is max(threshold, 3 x the coefficient of
variation of those runs' medians), so a case that wanders by itself needs a larger move to
be flagged. Exact metrics (FLOPs per step, parameters) change on any difference.
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
from scipy.stats import mannwhitneyu

from carbonbench.errors import InputError
from carbonbench.hardware import Hardware
from carbonbench.metrics import EXACT, STATISTICAL, round_metrics, round_values
from carbonbench.store import Store

METRICS = STATISTICAL + EXACT
DEFAULT_THRESHOLD = 0.05
ALPHA = 0.05  # with 3 rounds a side, the smallest one-sided p is 1/20
HISTORY_RUNS = 10  # earlier runs used for the noise floor
NOISE_FLOOR_K = 3.0
MIN_ROUNDS = 3


class CompareError(InputError):
    """Unusable input: exit status 2."""


@dataclass
class Side:
    """One side of a comparison: samples per case and metric, and what produced them."""

    name: str
    samples: dict[str, dict[str, list[float]]]
    hardware: dict[str, Any]
    suite: str | None
    history: dict[str, list[float]] = field(default_factory=dict)  # case -> earlier medians
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
    verdict: str  # regression | improvement | unchanged | changed | no data
    baseline: float | None
    current: float | None
    ratio: float | None
    p_value: float | None
    threshold: float
    test: str
    n_baseline: int
    n_current: int


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
    history: dict[str, list[float]] = {}
    earlier = [r for r in runs if r.seq < run.seq][-HISTORY_RUNS:]
    for past in earlier:
        for case_id, values in round_values(store.rows(past.run_id)).items():
            if values:
                history.setdefault(case_id, []).append(float(np.median(values)))
    carbon = run.carbon
    return Side(
        run_id,
        samples,
        run.hardware.comparable(),
        run.suite_name,
        history,
        carbon.describe() if carbon is not None else None,
        run.suite_text,
        errors,
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


def noise_floor(history: Iterable[float]) -> float:
    values = np.asarray(list(history), dtype=float)
    if values.size < 3 or values.mean() == 0:
        return 0.0
    return NOISE_FLOOR_K * float(values.std(ddof=1) / abs(values.mean()))


def judge(
    baseline: list[float],
    current: list[float],
    threshold: float,
    alpha: float = ALPHA,
    exact: bool = False,
) -> tuple[str, float | None, float | None, str]:
    """(verdict, ratio, p-value, test used) for one metric of one case. Lower is better."""
    if not baseline or not current:
        return "no data", None, None, "none"
    b, c = float(np.median(baseline)), float(np.median(current))
    ratio = c / b if b else (math.inf if c else 1.0)
    if exact:
        verdict = "unchanged" if c == b else ("regression" if c > b else "improvement")
        return verdict, ratio, None, "exact"
    if len(baseline) < MIN_ROUNDS or len(current) < MIN_ROUNDS:
        return "no data", ratio, None, f"needs >= {MIN_ROUNDS} rounds per side"
    test = "Mann-Whitney U, one-sided, against the baseline scaled by the threshold"
    base = np.asarray(baseline, dtype=float)
    if ratio > 1 + threshold:
        p = float(mannwhitneyu(current, base * (1 + threshold), alternative="greater").pvalue)
        return ("regression" if p <= alpha else "unchanged"), ratio, p, test
    if ratio < 1 - threshold:
        p = float(mannwhitneyu(current, base * (1 - threshold), alternative="less").pvalue)
        return ("improvement" if p <= alpha else "unchanged"), ratio, p, test
    return "unchanged", ratio, None, "within threshold"


def compare(
    baseline: Side,
    current: Side,
    thresholds: Thresholds | None = None,
    *,
    alpha: float = ALPHA,
    allow_hardware_mismatch: bool = False,
    metrics: Iterable[str] = METRICS,
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
    verdicts = []
    for case_id in common:
        floor = noise_floor(current.history.get(case_id, []))
        for metric in metrics:
            b = baseline.samples[case_id].get(metric, [])
            c = current.samples[case_id].get(metric, [])
            if not b and not c:
                continue
            threshold = max(thresholds.for_case(case_id, metric), floor)
            verdict, ratio, p, test = judge(b, c, threshold, alpha, exact=metric in EXACT)
            verdicts.append(
                Verdict(
                    case_id,
                    metric,
                    verdict,
                    float(np.median(b)) if b else None,
                    float(np.median(c)) if c else None,
                    ratio,
                    p,
                    threshold,
                    test,
                    len(b),
                    len(c),
                )
            )
    if floor_cases := [c for c in common if noise_floor(current.history.get(c, []))]:
        notes.append(f"noise floor from history applied to {len(floor_cases)} case(s)")
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


def markdown(result: Comparison) -> str:
    """A summary for a pull-request comment or $GITHUB_STEP_SUMMARY."""
    lines = [
        f"### carbonbench compare: {len(result.regressions)} regression(s)"
        + (f", {len(result.failed)} case(s) failing" if result.failed else ""),
        "",
        f"Baseline `{result.baseline}`, current `{result.current}`.",
    ]
    shown = [v for v in result.verdicts if v.verdict != "unchanged"] or result.verdicts
    if shown:
        lines += [
            "",
            "| case | metric | baseline | current | change | p | verdict |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
    for v in shown:
        change = f"{100 * (v.ratio - 1):+.1f}%" if v.ratio is not None else ""
        p = f"{v.p_value:.3g}" if v.p_value is not None else ""
        icon = {"regression": "🔴", "improvement": "🟢"}.get(v.verdict, "")
        lines.append(
            f"| `{v.case_id}` | {v.metric} | {_num(v.baseline)} | {_num(v.current)} | "
            f"{change} | {p} | {icon} {v.verdict} |"
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
    lines += [
        "",
        "Regression: the ratio of medians beyond the threshold t, and a one-sided "
        f"Mann-Whitney U test against the baseline scaled by (1 + t) with p <= {ALPHA}.",
    ]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
