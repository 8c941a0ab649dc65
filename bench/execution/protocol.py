"""What the supervisor and its workers say to each other, and what a run tells its caller.

A worker starts ahead of its round, loads what measuring needs and says so (``Loaded``); the
supervisor then hands it a ``Job``, one JSON line on its standard input, and the worker answers
with events, one JSON line each on its standard output: ``{"v": PROTOCOL, "event": "row",
...fields}``. The
in-process ``Runner`` and the supervisor hand the same event dataclasses to their caller's
``on_event``, so the command line reacts to one vocabulary whichever way a run is measured.
Both ends import this module only; a line of another protocol version is refused, never
guessed at. Torch-free: the supervisor imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self

from carbonbench.energy.controls import Change
from carbonbench.errors import CarbonbenchError, InputError

PROTOCOL = 2  # 2: the job on the worker's standard input, after its Loaded


class ProtocolError(CarbonbenchError):
    """A message that is not of this protocol: a bug or a mismatched install, never input."""


class JobFailed(RuntimeError):
    """A distributed run cannot go on: one process failed where the others cannot follow."""


IDLE_BASELINE_ENV = "CARBONBENCH_IDLE_BASELINE"


@dataclass(frozen=True)
class IdleBaseline:
    """Idle power per domain measured by another run on this machine (``ab`` measures it once
    per comparison and hands it to the later runs, both sides alike, in the environment
    variable IDLE_BASELINE_ENV, which versions before it ignore: they measure their own)."""

    idle_w: dict[str, float]
    source: str  # which run measured it, said wherever it is used

    def to_env(self) -> str:
        return json.dumps({"idle_w": self.idle_w, "source": self.source})

    @classmethod
    def from_env(cls, text: str) -> IdleBaseline:
        try:
            data = json.loads(text)
            idle = {str(d): float(w) for d, w in data["idle_w"].items()}
            return cls(idle, str(data["source"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise InputError(
                f"{IDLE_BASELINE_ENV} must be JSON {{'idle_w': {{domain: watts}}, 'source': "
                f"text}}, got {text[:80]!r}: unset it to measure the idle baseline"
            ) from None


@dataclass
class RunOptions:
    """How a run is measured, beyond its suite: what the command line gave."""

    label: str | None = None
    corpus: str | None = None
    seed: int = 0
    cpu_tdp_w: float | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)  # stored: --resume reapplies
    resume: str | None = None  # the id of a stopped run to add the remaining cases to
    rounds: int | None = None  # --rounds: overrides the suite's
    idle: IdleBaseline | None = None  # measured elsewhere on this machine: not measured again

    def stored(self) -> dict[str, Any]:
        """What else decides the numbers, for a reader and for ``--resume``."""
        return {"corpus": self.corpus, "cpu_tdp_w": self.cpu_tdp_w, "seed": self.seed}


@dataclass
class Job:
    """What one worker measures, as the supervisor writes it."""

    db: str
    run_id: str
    round: int
    cases: list[str]  # case ids, in the order to measure them
    suite_text: str
    suite_source: str
    carbon: dict[str, Any]
    options: dict[str, Any]  # corpus, seed, cpu_tdp_w
    components: list[str]  # what to measure (no gpu when no case uses one)
    idle_w: dict[str, float] | None = None  # measured by an earlier round; else measure it
    flops: dict[str, list[int]] = field(default_factory=dict)  # counted by earlier rounds
    supervisor_pid: int = 0
    v: int = PROTOCOL

    def to_line(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_line(cls, line: str) -> Job:
        try:
            data = json.loads(line)
        except ValueError:
            raise ProtocolError(f"not a job: {line[:200]!r}") from None
        if not isinstance(data, dict) or data.get("v") != PROTOCOL:
            version = data.get("v") if isinstance(data, dict) else None
            raise ProtocolError(f"a job of protocol {version}, not {PROTOCOL}: {line[:200]!r}")
        return cls(**data)


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run. Subclasses name themselves in ``event``."""

    event: ClassVar[str] = ""

    def to_json(self) -> str:
        return json.dumps({"v": PROTOCOL, "event": self.event, **asdict(self)}, default=str)


@dataclass(frozen=True)
class Starting(Event):
    """The supervisor starts ``workers`` worker processes together, ahead of their rounds
    (``carbonbench.execution.pool``): they load before anything is measured."""

    event: ClassVar[str] = "starting"
    workers: int


@dataclass(frozen=True)
class Loaded(Event):
    """A worker has imported what measuring needs (torch, and what the run's workloads import
    on first use) in ``seconds``, and waits for its job."""

    event: ClassVar[str] = "loaded"
    pid: int
    seconds: float


@dataclass(frozen=True)
class Idle(Event):
    """The idle baseline is being measured (before the first case of a run)."""

    event: ClassVar[str] = "idle"
    seconds: float


@dataclass(frozen=True)
class Ready(Event):
    """A worker is measuring: its process, what measures (sensors, GPUs, versions; the run's
    record takes the first worker's) and the idle power per domain."""

    event: ClassVar[str] = "ready"
    pid: int
    metadata: dict[str, Any]
    idle_w: dict[str, float] | None


@dataclass(frozen=True)
class Round(Event):
    """Round ``round`` begins: the ``index``-th of ``rounds`` planned so far, which together
    hold ``scheduled`` (round, case) visits (adaptive rounds add more)."""

    event: ClassVar[str] = "round"
    round: int
    index: int
    rounds: int
    scheduled: int


@dataclass(frozen=True)
class CaseStarted(Event):
    event: ClassVar[str] = "case"
    case_id: str
    round: int


@dataclass(frozen=True)
class Window(Event):
    """A measured window ended (before its row is stored)."""

    event: ClassVar[str] = "window"
    case_id: str
    round: int
    repeat: int
    duration_s: float
    steps: int


@dataclass(frozen=True)
class RowStored(Event):
    """A row is in the store: a measured window, or a case's failure (``status`` failed)."""

    event: ClassVar[str] = "row"
    case_id: str
    round: int
    repeat: int
    status: str
    error: str | None
    watts: float | None  # average over the domains that add up


@dataclass(frozen=True)
class CaseDone(Event):
    """A case is finished in this round, measured (``ok``) or failed; ``flops``: the FLOP
    counts this process made that its job did not bring, for the store and later rounds."""

    event: ClassVar[str] = "done"
    case_id: str
    round: int
    ok: bool
    flops: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sampler(Event):
    """What the power sampler of one worker cost, as it ends."""

    event: ClassVar[str] = "sampler"
    reads: int
    cpu_s: float
    interval_s: float
    interrupted: bool


@dataclass(frozen=True)
class _DeviceSetting(Event):
    """A GPU setting (``carbonbench.energy.controls.Change``), its fields flat on the line."""

    device: str
    nvml_index: int
    uuid: str
    name: str
    knob: str
    unit: str
    original: int | None
    value: int

    @classmethod
    def of(cls, change: Change) -> Self:
        return cls(**asdict(change))

    @property
    def change(self) -> Change:
        return Change(**{f.name: getattr(self, f.name) for f in fields(Change)})


@dataclass(frozen=True)
class DeviceChange(_DeviceSetting):
    """A GPU setting is about to be changed: sent (and flushed) before the change is made, so
    the supervisor can put it back whatever becomes of the worker."""

    event: ClassVar[str] = "device-change"


@dataclass(frozen=True)
class DeviceRestored(_DeviceSetting):
    """A GPU setting declared by ``DeviceChange`` is as it was again: put back after its case,
    or never changed (NVML refused the change)."""

    event: ClassVar[str] = "device-restored"


@dataclass(frozen=True)
class Error(Event):
    """An error inside carbonbench (not in a case's model or workload): the run stops."""

    event: ClassVar[str] = "error"
    message: str
    traceback: str


@dataclass(frozen=True)
class Replaced(Event):
    """A worker died before measuring anything; a fresh one takes over its round, once."""

    event: ClassVar[str] = "replaced"
    round: int
    cause: str


@dataclass(frozen=True)
class Stopping(Event):
    """A signal asked the run to stop after the current window (a second: at once)."""

    event: ClassVar[str] = "stopping"
    signal: str


EVENTS: dict[str, type[Event]] = {
    cls.event: cls
    for cls in (
        Starting,
        Loaded,
        Idle,
        Ready,
        Round,
        CaseStarted,
        Window,
        RowStored,
        CaseDone,
        Sampler,
        Error,
        Replaced,
        Stopping,
        DeviceChange,
        DeviceRestored,
    )
}


def decode(line: str) -> Event:
    """The event a JSON line carries; ProtocolError for anything else."""
    try:
        data = json.loads(line)
    except ValueError:
        raise ProtocolError(f"not an event: {line[:200]!r}") from None
    if not isinstance(data, dict) or data.get("v") != PROTOCOL:
        raise ProtocolError(f"not an event of protocol {PROTOCOL}: {line[:200]!r}")
    cls = EVENTS.get(data.get("event", ""))
    if cls is None:
        raise ProtocolError(f"unknown event {data.get('event')!r}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Outcome:
    """How a run ended, for its caller: ``status`` ok | failed | interrupted, the signal
    that stopped it, why it could not go on (None when it could) and whether that was a bug
    in carbonbench (``internal``) rather than the machine or the cases."""

    run_id: str
    status: str
    stopped_by: str | None = None
    error: str | None = None
    internal: bool = False
