"""A run's metadata: one typed, versioned record, stored as JSON beside the run.

Every module reads a run's metadata through these fields, never by string keys, so a key is
named once. Stored records are flat JSON objects (the layout every earlier version wrote), with
``metadata_version``; a record without one was written before it existed and reads the same
way. ``from_dict`` checks every field's type and names the run and field of a bad one; keys this
version does not know (written by a newer one) are kept in ``extra`` and written back as they
were, so an older carbonbench adding to a newer store loses nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.hardware import Hardware
from carbonbench.errors import CarbonbenchError

METADATA_VERSION = 1
# a suite's run, track()'s block, measure's command, a serving engine under load, a trainer's
# training (the transformers and Lightning callbacks)
KINDS = ("suite", "block", "command", "serving", "training")


class MetadataError(CarbonbenchError):
    """A stored record that is not what this version can read."""


@dataclass
class StoredOptions:
    """What else decides the numbers, for a reader and for ``--resume``."""

    corpus: str | None = None
    cpu_tdp_w: float | None = None
    seed: int = 0


@dataclass
class SamplerCost:
    """The power sampler's own cost over the run's workers."""

    reads: int = 0
    cpu_s: float = 0.0
    workers: int = 0
    interval_s: float | None = None


@dataclass
class Process:
    """The process that has the run open, so a run left ``running`` can be told from a live
    one (its pid and start time)."""

    pid: int
    started: float


@dataclass
class AbTag:
    """The run is one side of one pair of a ``carbonbench ab`` comparison."""

    comparison: str
    side: str  # base | head
    pair: int


@dataclass
class Sweep:
    """How a sweep over settings spent its rounds: with ``halving``, the settings that got no
    more rounds once another of their group beat them with confidence on both axes."""

    method: str  # halving
    x: str  # the metrics it judged on
    y: str
    # case id -> {"after_round": the last round it had, "by": the case id that beat it}
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunMetadata:
    kind: str = "suite"
    # the machine, as the supervisor first records it
    host: str | None = None
    cpu: str | None = None
    platform: str | None = None
    logical_cpus: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    # what measured: the first worker's account
    gpus: list[str] = field(default_factory=list)
    driver: str | None = None
    cuda: str | None = None
    torch_threads: int | None = None
    sensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensor_constants: dict[str, dict[str, Any]] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)
    # how it ran
    carbon: dict[str, Any] | None = None  # CarbonSettings.to_dict(); see ``carbon_settings``
    world_size: int = 1
    filters: dict[str, list[str]] = field(default_factory=dict)
    options: StoredOptions = field(default_factory=StoredOptions)
    rounds: int | None = None
    order: list[list[Any]] = field(default_factory=list)  # [[round, [case id, ...]], ...]
    skipped: list[str] = field(default_factory=list)
    idle_w: dict[str, float] | None = None
    idle_source: str | None = None  # None: measured by this run's first worker
    sampler: SamplerCost | None = None
    worker_wait_s: float | None = None  # waited for workers to load, beyond the run's set-up
    process: Process | None = None
    resumed_at: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # the signal that stopped it
    error: str | None = None  # why it could not go on
    logs: str | None = None  # the folder keeping its workers' logs
    # users' own work: a block (track) or a command (measure)
    work: float | None = None
    unit: str | None = None
    command: list[str] | None = None
    command_line: str | None = None
    exit_status: int | None = None
    signals: list[str] = field(default_factory=list)
    ab: AbTag | None = None
    sweep: Sweep | None = None
    # GPU settings the run changed: carbonbench.energy.controls.Changes.record()
    device_changes: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer version, kept
    metadata_version: int = METADATA_VERSION

    @property
    def hardware(self) -> Hardware:
        return Hardware(self.host or "", self.cpu or "", list(self.gpus))

    @property
    def carbon_settings(self) -> CarbonSettings | None:
        return CarbonSettings.from_dict(self.carbon) if self.carbon else None

    @property
    def case_order(self) -> list[tuple[int, list[str]]]:
        return [(int(r), list(ids)) for r, ids in self.order]

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        extra = data.pop("extra")
        for name, value in data.items():
            if dataclasses.is_dataclass(value):
                data[name] = dataclasses.asdict(value)
        return {**extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "run") -> RunMetadata:
        """The record ``data`` holds (as stored), checked field by field."""
        if not isinstance(data, dict):
            raise MetadataError(f"{where}: metadata is {type(data).__name__}, not an object")
        version = data.get("metadata_version", 0)
        if not isinstance(version, int) or version > METADATA_VERSION:
            raise MetadataError(
                f"{where}: metadata version {version!r} is newer than this carbonbench reads "
                f"({METADATA_VERSION}): upgrade carbonbench"
            )
        hints = _hints(cls)
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in hints or key == "extra":
                extra[key] = value
                continue
            values[key] = _typed(value, hints[key], f"{where}: metadata field {key!r}")
        values["metadata_version"] = METADATA_VERSION
        return cls(**values, extra=extra)

    def replace(self, **changes: Any) -> RunMetadata:
        return dataclasses.replace(self, **changes)

    @classmethod
    def fields(cls) -> frozenset[str]:
        return _fields(cls)

    @classmethod
    def fields_in(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The items of ``values`` that are fields of the record (of what provenance says of
        the machine and its sensors, say)."""
        names = _fields(cls)
        return {k: v for k, v in values.items() if k in names}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a record (resolved once: every run read goes through)."""
    return get_type_hints(cls)


@functools.cache
def _fields(cls: type) -> frozenset[str]:
    return frozenset(cls.__dataclass_fields__) - {"extra"}


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (a nested record from its dict); MetadataError otherwise."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _typed(value, options[0], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise MetadataError(f"{where} is {type(value).__name__}, not an object")
        hints = _hints(hint)
        unknown = set(value) - set(hints)
        if unknown:
            raise MetadataError(f"{where} has unknown keys {', '.join(sorted(unknown))}")
        fields = {k: _typed(v, hints[k], f"{where}.{k}") for k, v in value.items()}
        try:
            return hint(**fields)
        except TypeError as error:
            raise MetadataError(f"{where}: {error}") from None
    base = origin or hint
    if base is Any:
        return value
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise MetadataError(f"{where} is {type(value).__name__}, not {base.__name__}")
    return value
