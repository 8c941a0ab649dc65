"""Suite files (TOML): a matrix of cases and how to measure them.

```toml
[suite]
name = "smoke"
description = "..."

[matrix]                       # every combination is a case; each key takes a list
arch = ["gpt", "lstm"]
size = ["tiny"]
impl = ["fused"]
phase = ["train", "infer"]     # train, infer, generate (= prefill + decode), train-to-target
batch = [8]
seq_len = [64]
device = ["cpu"]               # cpu, cuda, cuda:1, ...
dtype = ["float32"]            # float32, bfloat16
# settings to sweep (optional; left as the machine has them when not given):
# threads = [1, 2]             # torch intra-op threads
# power_limit_w = [300, 500]   # GPU power limit through NVML (CUDA devices; root)
# sm_clock_mhz = [1410, 1980]  # locked GPU SM clock through NVML (CUDA devices; root)

[measure]
rounds = 3                     # fresh worker processes, each measuring every case (shuffled):
                               # the samples every interval and test is built on
warmup_steps = 3               # in every round
min_window_s = 1.0             # steps per window are sized to last at least this long
repeats = 3                    # measured windows per case in each round (their median is
                               # the round's value)
ci_half_width = 0.05           # optional: more rounds, of the cases still short of it, until
                               # the 95% interval over rounds / median <= this ...
max_rounds = 10                # ... up to this many rounds ...
budget_s = 1800                # ... or until the run has lasted this long
idle_baseline_s = 5
interval_s = 0.1
case_timeout_s = 600          # checked between steps: the case fails, the suite goes on
hang_grace_s = 60              # a step still running this long after the timeout: its
                               # worker is killed, the case stored as failed ("hung"), and
                               # the round goes on in a fresh worker
new_tokens = 32                # decode: tokens generated per step
sweep = "halving"              # optional: settings dominated with confidence after a round
                               # (carbonbench.analysis.pareto) get no more rounds

[target]                       # train-to-target
loss_factor = 1.1              # stop within 10% of the data's entropy rate
# loss = 2.0                   # or at this loss
eval_every = 25
max_steps = 5000
max_seconds = 600

[carbon]                       # optional: one of intensity, country, cloud; and pue
country = "FRA"
pue = 1.2

[thresholds]                   # optional: the regression gate's (see carbonbench.analysis.compare)
energy_per_token = 0.05
```
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_type_hints

from carbonbench.errors import InputError
from carbonbench.models import ARCHITECTURES, ArchitectureError, architecture
from carbonbench.suites.case import DEVICE_KNOBS, Case
from carbonbench.suites.phases import DTYPE_NAMES, SUITE_PHASES, supports, why_unsupported

BUILTIN = ("smoke", "gpu", "nightly", "settings", "gpu-settings")
# [thresholds] belongs to the regression gate (carbonbench.analysis.compare), which reads it
# from the suite; the suite only checks it (carbonbench.suites.thresholds)
TABLES = ("suite", "matrix", "measure", "target", "carbon", "thresholds")


class SuiteError(InputError):
    """A malformed suite file: names the file, the key and the expected form."""


@dataclass(frozen=True)
class Measure:
    warmup_steps: int = 3
    min_window_s: float = 1.0
    rounds: int = 3
    repeats: int = 3
    ci_half_width: float | None = None
    budget_s: float | None = None
    max_rounds: int = 10
    idle_baseline_s: float = 5.0
    interval_s: float = 0.1
    case_timeout_s: float = 600.0
    hang_grace_s: float = 60.0
    new_tokens: int = 32
    sweep: str | None = None  # "halving": drop settings dominated with confidence


SWEEPS = ("halving",)


@dataclass(frozen=True)
class Target:
    loss_factor: float = 1.1
    loss: float | None = None
    eval_every: int = 25
    max_steps: int = 5000
    max_seconds: float = 600.0


@dataclass(frozen=True)
class Carbon:
    intensity: float | None = None
    country: str | None = None
    cloud: str | None = None
    pue: float | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    source: str  # path, or "builtin:NAME"
    text: str  # the file's content, stored with each run
    cases: tuple[Case, ...]
    measure: Measure = field(default_factory=Measure)
    target: Target = field(default_factory=Target)
    carbon: Carbon = field(default_factory=Carbon)
    description: str = ""
    skipped: tuple[str, ...] = ()  # combinations the matrix names that cannot run, and why


# key -> (type, valid values or None); the architectures are read when a suite is parsed, so
# ones registered after import count
MATRIX: dict[str, tuple[type, Callable[[], tuple[str, ...]] | tuple[str, ...] | None]] = {
    "arch": (str, None),  # checked against the registry (or imported: package.module:name)
    "size": (str, lambda: tuple(dict.fromkeys(s for a in ARCHITECTURES.values() for s in a.sizes))),
    "impl": (str, lambda: tuple(dict.fromkeys(i for a in ARCHITECTURES.values() for i in a.impls))),
    "phase": (str, SUITE_PHASES),
    "batch": (int, None),
    "seq_len": (int, None),
    "device": (str, None),
    "dtype": (str, DTYPE_NAMES),
    "threads": (int, None),
    "power_limit_w": (int, None),
    "sm_clock_mhz": (int, None),
}
MATRIX_DEFAULTS: dict[str, list] = {
    "size": ["tiny"],
    "impl": ["fused"],
    "device": ["cpu"],
    "dtype": ["float32"],
    "threads": [None],
    "power_limit_w": [None],
    "sm_clock_mhz": [None],
}


# keys of earlier versions, with what replaced them
RENAMED = {
    "measure": {
        "max_repeats": "is gone: rounds (fresh worker processes) are the samples now, so "
        "give max_rounds (and repeats, the windows per case in each round)",
    }
}


def _base_type(hint: Any) -> type:
    """int for ``int`` and ``int | None``."""
    return next(a for a in get_args(hint) if a is not type(None)) if get_args(hint) else hint


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string"}[kind]


def _plural(kind: type) -> str:
    return {int: "integers", float: "numbers", str: "strings"}[kind]


def _section(where: str, data: dict[str, Any], cls: type, section: str) -> Any:
    """A dataclass from one TOML table, every key checked against its field's type."""
    hints = get_type_hints(cls)
    known = {f.name: _base_type(hints[f.name]) for f in fields(cls)}
    values = {}
    for key, value in data.items():
        if key in RENAMED.get(section, {}):
            raise SuiteError(f"{where}: [{section}].{key} {RENAMED[section][key]}")
        if key not in known:
            raise SuiteError(
                f"{where}: unknown key [{section}].{key}; valid keys: {', '.join(known)}"
            )
        kind = known[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise SuiteError(
                f"{where}: [{section}].{key} must be {_type_name(kind)}, got {value!r}"
            )
        if kind in (int, float) and value < 0:
            raise SuiteError(f"{where}: [{section}].{key} must be >= 0, got {value!r}")
        values[key] = value
    return cls(**values)


def _matrix(where: str, data: dict[str, Any]) -> dict[str, list]:
    for key in data:
        if key not in MATRIX:
            raise SuiteError(
                f"{where}: unknown key [matrix].{key}; valid keys: {', '.join(MATRIX)}"
            )
    matrix = {}
    for key, (kind, choices) in MATRIX.items():
        if key not in data and key not in MATRIX_DEFAULTS:
            raise SuiteError(f"{where}: [matrix].{key} is missing; give a list, e.g. {key} = [...]")
        if key not in data:
            matrix[key] = MATRIX_DEFAULTS[key]
            continue
        values = data[key]
        if not isinstance(values, list) or not values:
            raise SuiteError(
                f"{where}: [matrix].{key} must be a non-empty list of {_plural(kind)}, "
                f"got {values!r}"
            )
        for value in values:
            if not isinstance(value, kind) or isinstance(value, bool):
                raise SuiteError(
                    f"{where}: [matrix].{key} must list {_plural(kind)}, got {value!r}"
                )
            if callable(choices):
                choices = choices()
            if choices is not None and value not in choices:
                raise SuiteError(
                    f"{where}: [matrix].{key} has {value!r}; valid: {', '.join(choices)}"
                )
            if kind is int and value <= 0:
                raise SuiteError(f"{where}: [matrix].{key} values must be positive, got {value}")
            if key == "arch":
                try:
                    architecture(value)
                except ArchitectureError as error:
                    raise SuiteError(f"{where}: [matrix].arch: {error}") from None
            if key == "device":
                _check_device(where, value)
        matrix[key] = values
    return matrix


# the device types torch runs models on, optionally with an index: as torch.device parses them,
# without importing torch (the supervisor reads suites)
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|hpu|mtia|xla)(:\d+)?")


def _check_device(where: str, value: str) -> None:
    """A device string torch understands (cpu, cuda, cuda:1, mps, ...): checked when the suite
    is read, not when a case fails on it."""
    if DEVICE.fullmatch(value) is None:
        raise SuiteError(
            f"{where}: [matrix].device has {value!r}, which torch does not know; "
            "give cpu, cuda or cuda:N"
        )


def _why_not(case: Case) -> str | None:
    """Why a combination the matrix names cannot run (None if it can): an architecture
    without that size or variant, or a phase it does not support."""
    arch = architecture(case.arch)
    if case.size not in arch.sizes:
        return f"{case.arch} has no size {case.size} ({', '.join(arch.sizes)})"
    if case.impl not in arch.builders:
        return f"{case.arch} has no {case.impl} variant ({', '.join(arch.impls)})"
    if not supports(case.arch, case.phase):
        return why_unsupported(case.phase)
    return None


def parse(text: str, source: str) -> Suite:
    """A Suite from TOML text; ``source`` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{source}: not valid TOML ({error})") from None
    for key in data:
        if key not in TABLES:
            raise SuiteError(f"{source}: unknown table [{key}]; valid: {', '.join(TABLES)}")
    header = data.get("suite", {})
    name = header.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{source}: [suite].name must be a non-empty string, got {name!r}")
    if "matrix" not in data:
        raise SuiteError(f"{source}: the [matrix] table is missing")
    matrix = _matrix(source, data["matrix"])
    measure = _section(source, data.get("measure", {}), Measure, "measure")
    if measure.repeats < 1:
        raise SuiteError(f"{source}: [measure].repeats must be at least 1")
    if measure.rounds < 1 or measure.max_rounds < measure.rounds:
        raise SuiteError(f"{source}: [measure] needs 1 <= rounds <= max_rounds")
    if measure.hang_grace_s <= 0:
        raise SuiteError(f"{source}: [measure].hang_grace_s must be positive")
    if measure.sweep is not None and measure.sweep not in SWEEPS:
        raise SuiteError(
            f"{source}: [measure].sweep has {measure.sweep!r}; valid: {', '.join(SWEEPS)} "
            "(or leave it out to give every setting every round)"
        )
    for knob in DEVICE_KNOBS:
        if knob in data["matrix"] and not any(d.startswith("cuda") for d in matrix["device"]):
            raise SuiteError(
                f"{source}: [matrix].{knob} sets a GPU, but the matrix has no cuda device; "
                f'add one (device = ["cuda"]) or remove {knob}'
            )
    cases, skipped = [], []
    for combo in itertools.product(*matrix.values()):
        values = dict(zip(matrix, combo, strict=True))
        if not values["device"].startswith("cuda"):
            # a GPU's power limit and clocks do not touch a CPU case: one case, not copies
            values.update(dict.fromkeys(DEVICE_KNOBS))
        phases = ["prefill", "decode"] if values["phase"] == "generate" else [values["phase"]]
        for phase in phases:
            case = Case(**{**values, "phase": phase})
            why = _why_not(case)
            if why is None:
                cases.append(case)
            else:
                skipped.append(f"{case.case_id}: {why}")
    if "thresholds" in data:
        from carbonbench.suites.thresholds import ThresholdsError, thresholds_from_table

        try:
            thresholds_from_table(data["thresholds"], f"{source} [thresholds]")
        except ThresholdsError as error:
            raise SuiteError(str(error)) from None
    return Suite(
        name=name,
        source=source,
        text=text,
        cases=tuple(dict.fromkeys(cases)),
        measure=measure,
        target=_section(source, data.get("target", {}), Target, "target"),
        carbon=_section(source, data.get("carbon", {}), Carbon, "carbon"),
        description=str(header.get("description", "")),
        skipped=tuple(skipped),
    )


def load(name_or_path: str) -> Suite:
    """A built-in suite by name (smoke, nightly) or a suite file by path."""
    if name_or_path in BUILTIN:
        text = resources.files("carbonbench.suites").joinpath(f"{name_or_path}.toml").read_text()
        return parse(text, f"builtin:{name_or_path}")
    path = Path(name_or_path)
    if not path.is_file():
        raise SuiteError(
            f"no suite named {name_or_path!r}: give a built-in name ({', '.join(BUILTIN)}) "
            "or the path of a TOML file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise SuiteError(f"cannot read suite {path}: {error.strerror}") from None
    return parse(text, str(path))


def narrow(suite: Suite, **filters: list[str] | None) -> Suite:
    """Keep the cases whose fields are in every non-empty filter (``arch=["gpt"]``, ...).

    A value that no case of the suite has (a typo, most often) is an error naming it."""
    cases = suite.cases
    for key, wanted in filters.items():
        if not wanted:
            continue
        for value in wanted:
            if not any(_matches(getattr(c, key), [value], key) for c in suite.cases):
                values = list(dict.fromkeys(getattr(c, key) for c in suite.cases))
                if key == "phase" and {"prefill", "decode"} & set(values):
                    values.append("generate")  # the name that selects both
                known = ", ".join(values)
                raise SuiteError(
                    f"--{key} {value!r} matches no case of suite {suite.name!r}; "
                    f"its {key} values: {known}"
                )
        cases = tuple(c for c in cases if _matches(getattr(c, key), wanted, key))
    return dataclasses.replace(suite, cases=cases)


def _matches(value: str, wanted: list[str], key: str) -> bool:
    if key == "phase" and "generate" in wanted and value in ("prefill", "decode"):
        return True
    return value in wanted


def case_order(text: str, source: str) -> list[str]:
    """The case ids of a stored suite in its matrix's order (for tables), or [] if the suite
    no longer parses here (an architecture that cannot be imported, say)."""
    try:
        return [c.case_id for c in parse(text, source).cases]
    except SuiteError:
        return []
