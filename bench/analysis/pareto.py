"""Energy against time over the settings a run sweeps: per group of cases, the Pareto front,
which settings it dominates and how surely, and a recommended setting with its saving.

A group is the cases that do the same work in the same place: one arch, phase and device, and
one value of every knob the group does not sweep. Its swept knobs are the fields of ``KNOBS``
with more than one value among its rows; its settings are their values, one per case. Every
figure stands on rounds (``carbonbench.results.metrics.round_metrics``: one value per round,
the median of its windows): per setting and axis, the median over rounds m and the 95%
percentile-bootstrap interval [l, h] of that median.

Lower is better on both axes (a metric where higher is better, ``tokens_per_s``, is negated
first). Setting a dominates b when

    m_x(a) <= m_x(b)  and  m_y(a) <= m_y(b),  one of the two strictly;

the front is the settings no other dominates. b is dominated with confidence when some a has

    h_x(a) < l_x(b)  and  h_y(a) < l_y(b),

both from at least ``MIN_ROUNDS`` rounds on both axes; dominated in medians only (the
intervals overlap on an axis, or too few rounds), it is dominated, not significantly.

The recommended setting r, by one of two rules:

- ``max_slowdown`` F: r = argmin m_y(s) over { s : m_x(s) <= F min_t m_x(t) };
- ``eta`` η (Zeus; You, Chung and Chowdhury, NSDI 2023): r = argmin η m_y(s) + (1 - η) P_max
  m_x(s), with y an energy and x a time of the same work and P_max the device's maximum power,
  so that both terms are joules.

Its saving against the default setting d is 1 - m_y(r) / m_y(d), its slowdown
m_x(r) / m_x(d) - 1. Their 95% intervals bootstrap the ratio of medians over rounds, resampling
a round's two values together where both settings have that round (one worker process measured
both, under the same conditions), and each setting's rounds apart otherwise.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carbonbench.errors import InputError
from carbonbench.results.metadata import RunMetadata
from carbonbench.results.metrics import round_metrics, row_metrics
from carbonbench.results.store import ResultRow, RunRecord
from carbonbench.stats import bootstrap_ci, median
from carbonbench.suites.case import KNOBS
from carbonbench.suites.suite import MATRIX, SuiteError, parse

log = logging.getLogger(__name__)

X, Y = "time_per_token", "energy_per_token"
MAX_SLOWDOWN = 1.1
MIN_ROUNDS = 3  # fewer rounds than this support no claim of confidence
NATURAL = ("arch", "phase", "device")  # what the work is and where it runs: never a setting
HIGHER_IS_BETTER = frozenset({"tokens_per_s"})
ENERGY_TIME = {"energy_per_token": "time_per_token", "energy_to_target": "time_to_target"}
"""The energies (y) the ``eta`` rule can weigh, each with the time (x) of the same work."""
MAX_POWER_KEYS = ("max_power_w", "max_power_limit_w", "power_limit_max_w")
"""Names under which a sensor's constants may record a device's maximum power, in watts."""
STATUSES = ("front", "dominated-not-significantly", "dominated")
CONFIDENCE = 0.95
RESAMPLES = 2000


class ParetoError(InputError):
    """Unusable input: exit status 2."""


# -- metrics ----------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def window_metrics(row: ResultRow) -> dict[str, float]:
    """A window's figures: its figures of merit (``row_metrics``), energy and time to the
    target for a train-to-target window that reached it (one that did not has no such figure),
    and every finite number in ``row.extra`` (a serving row's ``p90_itl_s``, say)."""
    out = {k: float(v) for k, v in row.extra.items() if _number(v)}
    out.update(row_metrics(row))
    if row.phase == "train-to-target" and row.reached_target:
        out["energy_to_target"] = row.energy_j
        out["time_to_target"] = row.duration_s
    return out


def available_metrics(rows: Iterable[ResultRow]) -> list[str]:
    """The metrics some measured window of ``rows`` has, sorted."""
    return sorted({name for row in rows if row.ok for name in window_metrics(row)})


def round_values(
    rows: Iterable[ResultRow], metrics: Sequence[str]
) -> dict[str, dict[str, dict[int, float]]]:
    """Per case and metric, round -> that round's value (``round_metrics`` round by round, so
    that two settings' values can be paired by the round that measured both)."""
    wanted = set(metrics)
    by_round: dict[int, list[ResultRow]] = {}
    for row in rows:
        by_round.setdefault(row.round, []).append(row)
    out: dict[str, dict[str, dict[int, float]]] = {}
    for number, part in sorted(by_round.items()):
        per_case = round_metrics(
            part, lambda r: {k: v for k, v in window_metrics(r).items() if k in wanted}
        )
        for case_id, values in per_case.items():
            for metric, (value, *_) in values.items():
                out.setdefault(case_id, {}).setdefault(metric, {})[number] = value
    return out


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A metric of one setting: the median over rounds and its 95% bootstrap interval."""

    metric: str
    median: float
    low: float
    high: float
    values: dict[int, float] = field(repr=False)  # round -> value

    @classmethod
    def of(cls, metric: str, values: Mapping[int, float]) -> Interval:
        ordered = [values[r] for r in sorted(values)]
        low, high = bootstrap_ci(ordered, CONFIDENCE, RESAMPLES)
        return cls(metric, median(ordered), low, high, dict(values))

    def oriented(self) -> tuple[float, float, float]:
        """(median, low, high) with lower better: negated where higher is better."""
        if self.metric in HIGHER_IS_BETTER:
            return -self.median, -self.high, -self.low
        return self.median, self.low, self.high

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "median": self.median, "low": self.low, "high": self.high}


@dataclass
class Setting:
    case_id: str
    setting: dict[str, Any]  # every knob's value (KNOBS), swept or not
    x: Interval
    y: Interval
    status: str = "front"  # front | dominated-not-significantly | dominated
    dominated_by: str | None = None  # the case id of a dominator (the best one)

    @property
    def rounds(self) -> int:
        """Rounds behind the weaker of its two figures."""
        return min(len(self.x.values), len(self.y.values))

    def label(self, knobs: Sequence[str]) -> str:
        """``threads=2 batch=8``: the swept knobs' values."""
        return " ".join(f"{k}={self.setting[k]}" for k in knobs)

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "case_id": self.case_id,
            "x": self.x.to_json(),
            "y": self.y.to_json(),
            "rounds": self.rounds,
            "status": self.status,
            "dominated_by": self.dominated_by,
        }


@dataclass(frozen=True)
class Change:
    """A ratio of medians as a change, with its 95% interval; ``rounds``: the rounds paired
    (0: the two settings' rounds were resampled apart)."""

    median: float
    low: float
    high: float
    significant: bool  # the interval excludes 0, from at least MIN_ROUNDS rounds
    rounds: int

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "low": self.low,
            "high": self.high,
            "significant": self.significant,
            "rounds": self.rounds,
        }


@dataclass(frozen=True)
class MaxPower:
    """A device's maximum power, and where it was found."""

    watts: float
    source: str


@dataclass
class Recommendation:
    setting: Setting
    rule: str  # "max_slowdown=1.1" or "eta=0.5 (P_max 700 W from ...)"
    saving: Change  # of y against the baseline: 1 - m_y(r) / m_y(d)
    slowdown: Change  # of x against the baseline: m_x(r) / m_x(d) - 1
    max_power: MaxPower | None = None  # the eta rule's P_max

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting.setting,
            "case_id": self.setting.case_id,
            "rule": self.rule,
            "saving": self.saving.to_json(),
            "slowdown": self.slowdown.to_json(),
            "max_power": None
            if self.max_power is None
            else {"watts": self.max_power.watts, "source": self.max_power.source},
        }


@dataclass
class Group:
    """The settings of one group of cases, their front and the recommended setting."""

    key: dict[str, Any]  # arch, phase, device and the knobs not swept
    knobs: tuple[str, ...]  # the swept knobs
    settings: list[Setting]  # by median x, best first
    baseline: Setting | None = None  # the default setting (or --baseline)
    baseline_source: str = ""
    recommended: Recommendation | None = None
    left_out: list[str] = field(default_factory=list)  # cases without both figures

    @property
    def front(self) -> list[Setting]:
        return [s for s in self.settings if s.status == "front"]

    @property
    def title(self) -> str:
        """``gpt · train · cpu (size=tiny, impl=fused, seq_len=64, dtype=float32)``."""
        fixed = [f"{k}={v}" for k, v in self.key.items() if k not in NATURAL and v is not None]
        head = " · ".join(str(self.key[k]) for k in NATURAL)
        return f"{head} ({', '.join(fixed)})" if fixed else head

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "knobs": list(self.knobs),
            "settings": [s.to_json() for s in self.settings],
            "front": [{"setting": s.setting, "case_id": s.case_id} for s in self.front],
            "recommended": None if self.recommended is None else self.recommended.to_json(),
            "baseline": None
            if self.baseline is None
            else {
                "setting": self.baseline.setting,
                "case_id": self.baseline.case_id,
                "source": self.baseline_source,
            },
            "left_out": self.left_out,
        }


@dataclass
class Pareto:
    run_id: str
    x: str
    y: str
    groups: list[Group]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "x": self.x,
            "y": self.y,
            "groups": [g.to_json() for g in self.groups],
            "notes": self.notes,
        }


# -- groups and settings ------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """The rows of one group, with its identity and the knobs it sweeps."""

    key: dict[str, Any]
    knobs: tuple[str, ...]
    rows: list[ResultRow]


def sweeps(rows: Iterable[ResultRow]) -> list[Sweep]:
    """The groups of ``rows`` that sweep at least one knob, sorted by their identity. Rows are
    grouped by arch, phase and device; a knob with more than one value in a group is swept
    there, and the others become part of the group's key."""
    natural: dict[tuple[Any, ...], list[ResultRow]] = {}
    for row in rows:
        natural.setdefault(tuple(getattr(row, k) for k in NATURAL), []).append(row)
    out = []
    for identity, part in natural.items():
        values = {k: list(dict.fromkeys(getattr(r, k) for r in part)) for k in KNOBS}
        knobs = tuple(k for k in KNOBS if len(values[k]) > 1)
        if not knobs:
            continue
        key = dict(zip(NATURAL, identity, strict=True))
        key.update({k: values[k][0] for k in KNOBS if k not in knobs})
        out.append(Sweep(key, knobs, part))
    return sorted(out, key=lambda s: tuple(str(v) for v in s.key.values()))


def _dominates(a: Setting, b: Setting) -> bool:
    ax, ay, bx, by = a.x.oriented()[0], a.y.oriented()[0], b.x.oriented()[0], b.y.oriented()[0]
    return ax <= bx and ay <= by and (ax < bx or ay < by)


def _confidently(a: Setting, b: Setting, min_rounds: int) -> bool:
    """Whether a beats b with both intervals apart, each from at least ``min_rounds`` rounds."""
    if min(a.rounds, b.rounds) < min_rounds:
        return False
    (_, _, ax_high), (_, _, ay_high) = a.x.oriented(), a.y.oriented()
    (_, bx_low, _), (_, by_low, _) = b.x.oriented(), b.y.oriented()
    return ax_high < bx_low and ay_high < by_low


def _best(candidates: Iterable[Setting]) -> Setting:
    """The lowest y, then the lowest x (oriented), then the first case id."""
    return min(candidates, key=lambda s: (s.y.oriented()[0], s.x.oriented()[0], s.case_id))


def settings_of(
    rows: Iterable[ResultRow], x: str = X, y: str = Y, min_rounds: int = MIN_ROUNDS
) -> tuple[list[Setting], list[str]]:
    """One group's settings, each with its status, sorted by x (best first); and the cases
    left out (no round measured both metrics: failed, or a metric they do not have)."""
    rows = list(rows)
    values = round_values(rows, (x, y))
    first = {}
    for row in rows:
        first.setdefault(row.case_id, row)
    out, left_out = [], []
    for case_id, row in first.items():
        metrics = values.get(case_id, {})
        if not metrics.get(x) or not metrics.get(y):
            left_out.append(case_id)
            continue
        setting = {k: getattr(row, k) for k in KNOBS}
        out.append(
            Setting(case_id, setting, Interval.of(x, metrics[x]), Interval.of(y, metrics[y]))
        )
    for s in out:
        confident = [a for a in out if a is not s and _confidently(a, s, min_rounds)]
        dominators = [a for a in out if _dominates(a, s)]
        if confident:
            s.status, s.dominated_by = "dominated", _best(confident).case_id
        elif dominators:
            s.status, s.dominated_by = "dominated-not-significantly", _best(dominators).case_id
    out.sort(key=lambda s: (s.x.oriented()[0], s.y.oriented()[0], s.case_id))
    return out, sorted(left_out)


def confidently_dominated(
    rows: Iterable[ResultRow], x: str = X, y: str = Y, min_rounds: int = MIN_ROUNDS
) -> dict[str, str]:
    """Case id -> the case id of a setting of the same group whose intervals are entirely
    better on both axes (its high below this one's low on x and on y), for the settings with at
    least ``min_rounds`` rounds on both axes (the dominator too). What ``sweep = "halving"``
    stops measuring; empty when nothing is swept."""
    out = {}
    for sweep in sweeps(rows):
        for s in settings_of(sweep.rows, x, y, min_rounds)[0]:
            if s.status == "dominated" and s.dominated_by is not None:
                out[s.case_id] = s.dominated_by
    return out


# -- the recommendation -------------------------------------------------------------------


def recommend(
    settings: Sequence[Setting],
    *,
    max_slowdown: float | None = MAX_SLOWDOWN,
    eta: float | None = None,
    max_power_w: float | None = None,
    max_x: float | None = None,
) -> Setting | None:
    """The setting the rule picks (see the module's docstring): ``eta`` with ``max_power_w``
    when given; ``max_x``, a limit on x (a serving level's p90 inter-token latency, say): the
    lowest median y among the settings whose median x is within it, None if none is; else
    ``max_slowdown``."""
    if not settings:
        raise ValueError("no settings to recommend from")
    if max_x is not None:
        within = [s for s in settings if s.x.median <= max_x]
        return _best(within) if within else None
    if eta is not None:
        if max_power_w is None:
            raise ValueError("the eta rule needs max_power_w")

        def cost(s: Setting) -> tuple[float, str]:
            return eta * s.y.median + (1 - eta) * max_power_w * s.x.median, s.case_id

        return min(settings, key=cost)
    factor = MAX_SLOWDOWN if max_slowdown is None else max_slowdown
    fastest = min(s.x.oriented()[0] for s in settings)
    # oriented, higher-is-better x is -m: within F of the best means -m <= -best / F
    higher = settings[0].x.metric in HIGHER_IS_BETTER
    limit = fastest / factor if higher else fastest * factor
    tolerance = 1e-12 * abs(limit)
    return _best(s for s in settings if s.x.oriented()[0] <= limit + tolerance)


def _ratio(num: Interval, den: Interval) -> tuple[float, float, float, int]:
    """m(num) / m(den), its 95% interval, and the rounds paired: resampled together where both
    have a round (two or more such rounds), else each apart."""
    ratio = num.median / den.median
    common = sorted(set(num.values) & set(den.values))
    rng = np.random.default_rng(0)
    if len(common) >= 2:
        a = np.array([num.values[r] for r in common])
        b = np.array([den.values[r] for r in common])
        picks = rng.integers(0, len(common), (RESAMPLES, len(common)))
        ratios = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
        paired = len(common)
    else:
        a, b = np.array(list(num.values.values())), np.array(list(den.values.values()))
        ratios = np.median(a[rng.integers(0, a.size, (RESAMPLES, a.size))], axis=1) / np.median(
            b[rng.integers(0, b.size, (RESAMPLES, b.size))], axis=1
        )
        paired = 0
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high), paired


def _change(num: Interval, den: Interval, sign: int, min_rounds: int) -> Change:
    ratio, low, high, paired = _ratio(num, den)
    enough = paired >= min_rounds or (
        paired == 0 and min(len(num.values), len(den.values)) >= min_rounds
    )
    if sign > 0:  # ratio - 1
        centre, low, high = ratio - 1, low - 1, high - 1
    else:  # 1 - ratio
        centre, low, high = 1 - ratio, 1 - high, 1 - low
    return Change(centre, low, high, enough and (low > 0 or high < 0), paired)


def saving(setting: Setting, baseline: Setting, min_rounds: int = MIN_ROUNDS) -> Change:
    """1 - m_y(setting) / m_y(baseline), with its interval (see ``_ratio``)."""
    return _change(setting.y, baseline.y, -1, min_rounds)


def slowdown(setting: Setting, baseline: Setting, min_rounds: int = MIN_ROUNDS) -> Change:
    """m_x(setting) / m_x(baseline) - 1, with its interval (see ``_ratio``)."""
    return _change(setting.x, baseline.x, +1, min_rounds)


# -- the default setting ------------------------------------------------------------------


def parse_baseline(text: str) -> dict[str, Any]:
    """``threads=1,batch=8`` as knob values, typed as the suite's matrix types them (``none``
    for a knob left as the machine has it)."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name or not value:
            raise ParetoError(f"--baseline {text!r}: give knob=value pairs, e.g. threads=1,batch=8")
        if name not in KNOBS:
            raise ParetoError(f"--baseline: unknown knob {name!r}; knobs: {', '.join(KNOBS)}")
        kind = MATRIX[name][0]
        if value.lower() in ("none", "null"):
            out[name] = None
        elif kind is int:
            try:
                out[name] = int(value)
            except ValueError:
                raise ParetoError(f"--baseline: {name} must be an integer, got {value!r}") from None
        else:
            out[name] = value
    if not out:
        raise ParetoError(f"--baseline {text!r}: give knob=value pairs, e.g. threads=1,batch=8")
    return out


def _suite_default(
    settings: Sequence[Setting], knobs: Sequence[str], suite_text: str, source: str
) -> tuple[Setting, str] | None:
    """The group's first measured case in the suite's order (its first case has every knob at
    its matrix's first value), or, if the suite no longer parses here, the setting with each
    swept knob at the first value its [matrix] lists; with where it comes from."""
    ids = {s.case_id: s for s in settings}
    try:
        order = [c.case_id for c in parse(suite_text, source).cases]
    except SuiteError as error:
        log.debug("the stored suite does not parse here (%s): reading its [matrix]", error)
    else:
        mine = [case_id for case_id in order if case_id in ids]
        if not mine:
            return None
        return ids[mine[0]], "the suite's first values"
    try:
        matrix = tomllib.loads(suite_text).get("matrix", {})
    except tomllib.TOMLDecodeError:
        return None
    wanted = {k: v[0] for k in knobs if isinstance(v := matrix.get(k), list) and v}
    if set(wanted) != set(knobs):
        return None
    match = next((s for s in settings if all(s.setting[k] == wanted[k] for k in knobs)), None)
    return None if match is None else (match, "the first values of the suite's [matrix]")


def default_setting(
    settings: Sequence[Setting],
    knobs: Sequence[str],
    *,
    suite_text: str = "",
    suite_source: str = "suite",
    given: Mapping[str, Any] | None = None,
    first: Sequence[str] = (),
) -> tuple[Setting, str]:
    """The setting savings are measured against, and where it comes from: the suite's first
    value of each swept knob; failing that, the first of ``first`` (case ids, the order they
    were measured in) among the settings. ``given`` (``--baseline``) overrides knobs of it."""
    if not settings:
        raise ValueError("no settings")
    found = _suite_default(settings, knobs, suite_text, suite_source) if suite_text else None
    if found is None:
        rank = {case_id: i for i, case_id in enumerate(first)}
        default = min(settings, key=lambda s: (rank.get(s.case_id, len(rank)), s.case_id))
        source = "the first setting measured (the run's suite gives no default)"
    else:
        default, source = found
    if not given:
        return default, source
    wanted = {**{k: default.setting[k] for k in knobs}, **given}
    for s in settings:
        if all(s.setting[k] == v for k, v in wanted.items()):
            return s, "--baseline"
    shown = "; ".join(s.label(knobs) for s in settings)
    asked = ",".join(f"{k}={v}" for k, v in wanted.items())
    raise ParetoError(f"--baseline: no measured setting has {asked}; the settings: {shown}")


# -- maximum power --------------------------------------------------------------------------


def _gpu_max_power(metadata: RunMetadata, device: str) -> MaxPower | None:
    """NVML's highest power limit of the GPU a CUDA device names: from the sensor's account
    (``sensors.nvml.max_power_w``, by domain), else from its constants' GPU record."""
    account = metadata.sensors.get("nvml", {})
    records = metadata.sensor_constants.get("nvml", {}).get("gpus", {})
    limits = account.get("max_power_w") if isinstance(account.get("max_power_w"), dict) else {}
    names = account.get("devices") if isinstance(account.get("devices"), dict) else {}
    domains = set(limits) | set(records)
    domain = f"gpu:{device.partition(':')[2] or 0}"
    if domain not in domains and len(domains) == 1:
        domain = next(iter(domains))
    record = records.get(domain) if isinstance(records.get(domain), dict) else {}
    name = names.get(domain) or record.get("name") or domain
    if _number(limits.get(domain)) and limits[domain] > 0:
        return MaxPower(float(limits[domain]), f"NVML's highest power limit of {domain} ({name})")
    for key in MAX_POWER_KEYS:
        if _number(record.get(key)) and record[key] > 0:
            return MaxPower(float(record[key]), f"NVML {key} of {domain} ({name})")
    return None


def max_power(metadata: RunMetadata, device: str) -> MaxPower | None:
    """The device's maximum power as the run's sensors recorded it, or None: for a CUDA device
    its NVML maximum power limit; for the CPU the RAPL maximum power, else the modelled CPU's
    P_max (its TDP)."""
    if device.startswith("cuda"):
        return _gpu_max_power(metadata, device)
    if device != "cpu":
        return None
    constants = metadata.sensor_constants
    rapl = constants.get("rapl", {})
    for key in MAX_POWER_KEYS:
        value = rapl.get(key)
        if isinstance(value, dict) and value and all(_number(v) for v in value.values()):
            return MaxPower(float(sum(value.values())), f"RAPL {key} of {', '.join(value)}")
        if _number(value) and value > 0:
            return MaxPower(float(value), f"RAPL {key}")
    modelled = constants.get("modelled-cpu", {})
    if _number(modelled.get("p_max_w")) and modelled["p_max_w"] > 0:
        why = modelled.get("p_max_source") or "no source recorded"
        return MaxPower(float(modelled["p_max_w"]), f"the modelled CPU's P_max, {why}")
    return None


def _missing_power(device: str) -> str:
    if device.startswith("cuda"):
        return f"no NVML maximum power limit for {device}"
    if device == "cpu":
        return "neither a RAPL maximum power nor the modelled CPU's P_max among its constants"
    return f"no sensor that reports the maximum power of {device}"


# -- the whole run --------------------------------------------------------------------------


def no_sweep_message(run_id: str) -> str:
    return (
        f"run {run_id} sweeps no setting: every group of its cases has one value of each knob "
        f"({', '.join(KNOBS)}); list several values of one in the suite's [matrix], e.g. "
        'threads = [1, 2, 4], batch = [8, 16] or dtype = ["float32", "bfloat16"], and run it'
    )


def analyse(
    rows: Sequence[ResultRow],
    run: RunRecord | None = None,
    *,
    x: str = X,
    y: str = Y,
    max_slowdown: float | None = None,
    eta: float | None = None,
    max_power_w: float | None = None,
    baseline: Mapping[str, Any] | None = None,
    min_rounds: int = MIN_ROUNDS,
    max_x: float | None = None,
) -> Pareto:
    """Every swept group of one run's rows: settings, front, default and recommended setting.

    ``run`` gives the stored suite (the default setting) and the sensors' constants (P_max for
    ``eta``); ``max_power_w`` overrides the latter. ParetoError: nothing swept, a metric the
    rows lack, or a rule that cannot be applied."""
    run_id = run.run_id if run is not None else (rows[0].run_id if rows else "?")
    if max_slowdown is not None and eta is not None:
        raise ParetoError("give --max-slowdown or --eta, not both")
    if max_slowdown is not None and not (math.isfinite(max_slowdown) and max_slowdown >= 1):
        raise ParetoError(
            f"--max-slowdown must be at least 1 (1.1: 10% slower), got {max_slowdown}"
        )
    if eta is not None and not 0 <= eta <= 1:
        raise ParetoError(f"--eta must be in [0, 1] (1: energy only, 0: time only), got {eta}")
    if max_power_w is not None and not (math.isfinite(max_power_w) and max_power_w > 0):
        raise ParetoError(f"--max-power-w must be positive watts, got {max_power_w}")
    known = available_metrics(rows)
    for axis, metric in (("--x", x), ("--y", y)):
        if metric not in known:
            valid = ", ".join(known) or "none"
            raise ParetoError(f"{axis}: run {run_id} has no metric {metric!r}; valid: {valid}")
    if eta is not None and ENERGY_TIME.get(y) != x:
        pairs = ", ".join(f"--x {t} --y {e}" for e, t in ENERGY_TIME.items())
        raise ParetoError(
            f"--eta weighs an energy against the time of the same work, not {y} against {x}: "
            f"use {pairs}, or --max-slowdown"
        )
    found = sweeps(rows)
    if not found:
        raise ParetoError(no_sweep_message(run_id))
    first = list(dict.fromkeys(r.case_id for r in rows))
    result = Pareto(run_id, x, y, [])
    halving = run.metadata.sweep if run is not None else None
    for case_id, dropped in (halving.dropped if halving is not None else {}).items():
        result.notes.append(
            f"{case_id}: no rounds after round {dropped.get('after_round')} ({halving.method}: "
            f"{dropped.get('by')} beat it with confidence on {halving.x} and {halving.y})"
        )
    for sweep in found:
        settings, left_out = settings_of(sweep.rows, x, y, min_rounds)
        group = Group(sweep.key, sweep.knobs, settings, left_out=left_out)
        result.groups.append(group)
        if not settings:
            result.notes.append(f"{group.title}: no setting measured both {x} and {y}")
            continue
        group.baseline, group.baseline_source = default_setting(
            settings,
            sweep.knobs,
            suite_text=run.suite_text if run is not None else "",
            suite_source=run.suite_source if run is not None else "suite",
            given=baseline,
            first=first,
        )
        power = None
        if eta is not None:
            device = str(sweep.key["device"])
            if max_power_w is not None:
                power = MaxPower(max_power_w, "--max-power-w")
            elif run is not None:
                power = max_power(run.metadata, device)
            if power is None:
                raise ParetoError(
                    f"--eta needs the device's maximum power P_max, and run {run_id} records "
                    f"{_missing_power(device)}: give --max-power-w W, or use --max-slowdown F"
                )
            chosen = recommend(settings, eta=eta, max_power_w=power.watts)
            rule = f"eta={eta:g} (P_max {power.watts:g} W from {power.source})"
        elif max_x is not None:
            chosen = recommend(settings, max_x=max_x)
            rule = f"{x} <= {max_x:g}"
            if chosen is None:
                result.notes.append(f"{group.title}: no setting has a median {x} within {max_x:g}")
                continue
        else:
            factor = MAX_SLOWDOWN if max_slowdown is None else max_slowdown
            chosen = recommend(settings, max_slowdown=factor)
            rule = f"max_slowdown={factor:g}"
        group.recommended = Recommendation(
            chosen,
            rule,
            saving(chosen, group.baseline, min_rounds),
            slowdown(chosen, group.baseline, min_rounds),
            power,
        )
    return result
