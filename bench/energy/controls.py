"""GPU settings a case may ask for (a power limit, a locked SM clock), changed through NVML
and always put back.

A GPU's setting outlives the process that changed it: a worker killed between the change and
its undoing would leave the GPU capped for everyone after it. So every change is a typed
record (``Change``: the GPU, the knob, the original value and the new one), declared to
whoever outlives the changing process before it is made, and kept in a ``Changes`` ledger
that puts every setting back to the first original it saw. Each knob is one ``Control`` class
behind one small interface; ``check`` asks the GPU, before anything is measured, whether each
value a suite gives can be set here at all.

Torch-free (the supervisor puts settings back) and import-light: pynvml is imported when a
setting is first asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from carbonbench.energy.sensors.nvml import visible_handles
from carbonbench.errors import InputError

log = logging.getLogger(__name__)
_CUDA = re.compile(r"cuda(?::(\d+))?")


class SettingError(InputError):
    """A GPU setting that cannot be made here; one line naming the fix."""


@dataclass(frozen=True)
class Change:
    """One setting of one GPU changed, in NVML's units (``unit``: mW or MHz)."""

    device: str  # cuda:N, N as CUDA counts (after CUDA_VISIBLE_DEVICES)
    nvml_index: int
    uuid: str
    name: str
    knob: str  # the case's field: power_limit_w | sm_clock_mhz
    unit: str
    original: int | None  # None: not readable (locked clocks), so put back by a reset
    value: int

    @property
    def key(self) -> tuple[str, str]:
        """What one setting is: this knob of this GPU."""
        return self.uuid, self.knob


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Control(ABC):
    """One knob of one GPU: its range, its current value, setting it and putting it back."""

    knob: ClassVar[str]  # the case's field
    what: ClassVar[str]  # in messages: "power limit"
    unit: ClassVar[str]  # NVML's unit of the values
    symbol: ClassVar[str]  # the case's unit, in messages

    def __init__(self, nvml: Any, handle: Any, device: str, nvml_index: int) -> None:
        self.nvml, self.handle = nvml, handle
        self.device, self.nvml_index = device, nvml_index
        self.uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        self.name = _text(nvml.nvmlDeviceGetName(handle))

    @staticmethod
    @abstractmethod
    def to_nvml(value: int) -> int:
        """A case's value in NVML's unit."""

    @staticmethod
    @abstractmethod
    def number(value: int) -> str:
        """A value in NVML's unit as a number in the case's unit."""

    @abstractmethod
    def range(self) -> tuple[int | None, int]:
        """(lowest, highest) this GPU takes, in NVML's unit; lowest None: not known."""

    @abstractmethod
    def current(self) -> int | None:
        """The value in force, in NVML's unit; None where NVML cannot say."""

    @abstractmethod
    def probe(self) -> None:
        """SettingError unless this process may change the knob (without changing it)."""

    @abstractmethod
    def set(self, value: int) -> None:
        """Set the knob (NVML's unit); NVMLError as NVML raises it."""

    @abstractmethod
    def put_back(self, change: Change) -> bool:
        """Undo ``change`` (idempotent); False when there was nothing to undo."""

    @staticmethod
    @abstractmethod
    def by_hand(change: Change) -> str:
        """The command that undoes ``change`` when carbonbench could not."""

    def __str__(self) -> str:
        return f"{self.device} ({self.name})"

    @classmethod
    def show(cls, value: int | None) -> str:
        return "unchanged" if value is None else f"{cls.number(value)} {cls.symbol}"

    def bounds(self) -> tuple[int | None, int]:
        """``range``, with NVML's refusal (not supported) as a SettingError."""
        try:
            return self.range()
        except self.nvml.NVMLError as error:
            raise self.failed(error) from None

    def change(self, value: int) -> Change:
        """The change that sets the case's ``value``, with the original read now; SettingError
        for a value outside this GPU's range."""
        lowest, highest = self.bounds()
        wanted = self.to_nvml(value)
        if wanted > highest or (lowest is not None and wanted < lowest):
            shown = f"up to {self.number(highest)}"
            if lowest is not None:
                shown = f"{self.number(lowest)}-{self.number(highest)}"
            raise SettingError(
                f"{self.knob} = {value} is outside {self.device}'s range {shown} {self.symbol} "
                f"({self.name}): give a value in it"
            )
        try:
            original = self.current()
        except self.nvml.NVMLError as error:
            raise self.failed(error) from None
        return Change(
            device=self.device,
            nvml_index=self.nvml_index,
            uuid=self.uuid,
            name=self.name,
            knob=self.knob,
            unit=self.unit,
            original=original,
            value=wanted,
        )

    def apply(self, change: Change) -> None:
        """Make ``change``; SettingError if NVML refuses it."""
        try:
            self.set(change.value)
        except self.nvml.NVMLError as error:
            raise self.failed(error) from None
        log.info("%s: %s set to %s", self, self.what, self.show(change.value))

    def failed(self, error: Exception) -> SettingError:
        """An NVML error as the one line a person reads."""
        code = getattr(error, "value", None)
        if code == self.nvml.NVML_ERROR_NO_PERMISSION:
            return self.needs_root()
        if code == self.nvml.NVML_ERROR_NOT_SUPPORTED:
            return SettingError(
                f"{self} does not let NVML change its {self.what}: remove {self.knob} from "
                "the suite's matrix"
            )
        return SettingError(f"could not change {self}'s {self.what}: {error}")

    def needs_root(self) -> SettingError:
        verb = "setting" if self.knob == "power_limit_w" else "locking"
        return SettingError(
            f"{verb} a GPU's {self.what} needs root: run with sudo, or remove {self.knob} "
            "from the suite's matrix"
        )


class PowerLimit(Control):
    """The board's power limit (``nvidia-smi -pl``); needs root to set."""

    knob, what, unit, symbol = "power_limit_w", "power limit", "mW", "W"

    @staticmethod
    def to_nvml(value: int) -> int:
        return value * 1000

    @staticmethod
    def number(value: int) -> str:
        return f"{value / 1000:g}"

    def range(self) -> tuple[int | None, int]:
        lowest, highest = self.nvml.nvmlDeviceGetPowerManagementLimitConstraints(self.handle)
        return int(lowest), int(highest)

    def current(self) -> int | None:
        return int(self.nvml.nvmlDeviceGetPowerManagementLimit(self.handle))

    def probe(self) -> None:
        """Set the limit in force to itself: a no-op that NVML refuses without root."""
        try:
            self.set(self.nvml.nvmlDeviceGetPowerManagementLimit(self.handle))
        except self.nvml.NVMLError as error:
            raise self.failed(error) from None

    def set(self, value: int) -> None:
        self.nvml.nvmlDeviceSetPowerManagementLimit(self.handle, value)

    def put_back(self, change: Change) -> bool:
        assert change.original is not None  # a power limit can always be read
        if self.current() == change.original:
            return False
        self.set(change.original)
        return True

    @staticmethod
    def by_hand(change: Change) -> str:
        watts = PowerLimit.number(change.original or 0)
        return f"sudo nvidia-smi -i {change.nvml_index} -pl {watts}"


class SmClock(Control):
    """The SM (graphics) clock locked to one frequency (``nvidia-smi -lgc``); needs root.

    NVML cannot say whether a GPU's clocks were already locked (it has no getter for locked
    clocks), so putting them back is a reset (``nvidia-smi -rgc``): clocks that someone had
    locked before the run come back unlocked."""

    knob, what, unit, symbol = "sm_clock_mhz", "SM clock", "MHz", "MHz"

    @staticmethod
    def to_nvml(value: int) -> int:
        return value

    @staticmethod
    def number(value: int) -> str:
        return str(value)

    @classmethod
    def show(cls, value: int | None) -> str:
        return "unlocked" if value is None else f"{value} MHz"

    def range(self) -> tuple[int | None, int]:
        nvml = self.nvml
        highest = int(nvml.nvmlDeviceGetMaxClockInfo(self.handle, nvml.NVML_CLOCK_SM))
        try:
            clocks = [
                int(clock)
                for memory in nvml.nvmlDeviceGetSupportedMemoryClocks(self.handle)
                for clock in nvml.nvmlDeviceGetSupportedGraphicsClocks(self.handle, memory)
            ]
        except nvml.NVMLError:  # the list is optional: the maximum still bounds the value
            clocks = []
        return (min(clocks) if clocks else None), highest

    def current(self) -> int | None:
        return None  # NVML has no getter for locked clocks

    def probe(self) -> None:
        """Locking clocks needs root, and trying it would change them: ask the process."""
        geteuid = getattr(os, "geteuid", None)
        if geteuid is not None and geteuid() != 0:
            raise self.needs_root()

    def set(self, value: int) -> None:
        self.nvml.nvmlDeviceSetGpuLockedClocks(self.handle, value, value)

    def put_back(self, change: Change) -> bool:
        self.nvml.nvmlDeviceResetGpuLockedClocks(self.handle)
        return True

    @staticmethod
    def by_hand(change: Change) -> str:
        return f"sudo nvidia-smi -i {change.nvml_index} -rgc"


CONTROLS: dict[str, type[Control]] = {c.knob: c for c in (PowerLimit, SmClock)}
"""Every knob carbonbench changes on a GPU, by the case's field (suites' DEVICE_KNOBS)."""


@contextlib.contextmanager
def nvml_session() -> Iterator[Any]:
    """The started pynvml module (NVML counts its starts, so sessions nest with a sensor's);
    SettingError when NVML cannot start."""
    try:
        import pynvml
    except ImportError:
        raise SettingError("GPU settings need the NVML binding: pip install nvidia-ml-py") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise SettingError(
            f"GPU settings need NVML, which could not start ({error}): check the NVIDIA "
            "driver with nvidia-smi"
        ) from None
    try:
        yield pynvml
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def control(nvml: Any, device: str, knob: str) -> Control:
    """The control of ``knob`` on ``device`` (cuda or cuda:N, as CUDA counts GPUs)."""
    match = _CUDA.fullmatch(device)
    if match is None:
        raise SettingError(f"{knob} sets a CUDA GPU, not {device}")
    index = int(match[1] or 0)
    try:
        handles = visible_handles(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if index >= len(handles):
            raise SettingError(f"{device} is not a GPU here ({len(handles)} visible to CUDA)")
        nvml_index, handle = handles[index]
        return CONTROLS[knob](nvml, handle, f"cuda:{index}", nvml_index)
    except nvml.NVMLError as error:
        raise SettingError(f"NVML could not find {device}: {error}") from None


def check(cases: Iterable[Any]) -> None:
    """Refuse (SettingError, an InputError) before anything is measured any GPU setting the
    cases give that cannot be made here: NVML missing, not supported by the GPU, no permission
    (no root), or a value outside the GPU's range. ``cases``: anything with ``device`` and the
    knobs' fields (suites' Case). Changes nothing."""
    wanted = dict.fromkeys(
        (case.device, knob, value)
        for case in cases
        for knob in CONTROLS
        if (value := getattr(case, knob, None)) is not None
    )
    if not wanted:
        return
    with nvml_session() as nvml:
        probed: set[tuple[str, str]] = set()
        for device, knob, value in wanted:
            c = control(nvml, device, knob)
            if (c.device, knob) not in probed:
                c.bounds()  # not supported: said before permission
                c.probe()
                probed.add((c.device, knob))
            c.change(value)


def put_back(changes: Iterable[Change]) -> dict[tuple[str, str], bool | None]:
    """Undo every change, each to its original, in one NVML session: by key, True where a
    setting was put back, False where it already was, None where that failed. A failure is
    never raised (the other settings still go back) and never silent: one line on standard
    error naming the GPU, the knob and the command that undoes it by hand."""
    changes = list(changes)
    if not changes:
        return {}
    try:
        with nvml_session() as nvml:
            return {change.key: _put_back(nvml, change) for change in changes}
    except SettingError as error:  # NVML did not start
        for change in changes:
            _warn(change, str(error))
        return dict.fromkeys((change.key for change in changes), None)


def _put_back(nvml: Any, change: Change) -> bool | None:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(change.nvml_index)
        return CONTROLS[change.knob](nvml, handle, change.device, change.nvml_index).put_back(
            change
        )
    except nvml.NVMLError as error:
        _warn(change, str(error))
        return None


def _warn(change: Change, why: str) -> None:
    kind = CONTROLS[change.knob]
    print(
        f"carbonbench: warning: could not put {change.device}'s ({change.name}, NVML index "
        f"{change.nvml_index}) {kind.what} ({change.knob}) back ({why}): run "
        f"`{kind.by_hand(change)}`",
        file=sys.stderr,
        flush=True,
    )


class Changes:
    """The GPU settings changed through a run, by (GPU, knob): the first original declared
    for each (a process started after a killed one would read what that one left), the values
    set, and which are still out (declared, not known to be put back)."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], Change] = {}
        self._values: dict[tuple[str, str], list[int]] = {}
        self._out: set[tuple[str, str]] = set()
        self._by: dict[tuple[str, str], str] = {}  # who put it back last: case, supervisor...

    def __bool__(self) -> bool:
        return bool(self._first)

    @property
    def out(self) -> list[Change]:
        return [self._first[key] for key in self._first if key in self._out]

    def declared(self, change: Change) -> bool:
        """A process is about to make ``change``; True if ``record`` says more now (a new
        setting, or a value not set before)."""
        self._first.setdefault(change.key, change)
        self._out.add(change.key)
        values = self._values.setdefault(change.key, [])
        if change.value in values:
            return False
        values.append(change.value)
        return True

    def restored(self, change: Change, by: str = "case") -> None:
        """The process that made ``change`` put it back."""
        self._out.discard(change.key)
        self._by[change.key] = by

    def put_back(self, every: bool = False, by: str = "supervisor") -> None:
        """Put back the settings still out (``every``: each one ever declared, again: where
        nothing changed that costs a read) to their first originals, logging each one."""
        changes = list(self._first.values()) if every else self.out
        for key, done in put_back(changes).items():
            if done is None:  # said on standard error
                continue
            change = self._first[key]
            if done:
                was = CONTROLS[change.knob].show(change.original)
                if key in self._out:
                    log.warning(
                        "%s's %s put back to %s by the %s: its case did not end normally",
                        change.device,
                        change.knob,
                        was,
                        by,
                    )
                    self._by[key] = by
                else:
                    log.info("%s's %s put back to %s (again)", change.device, change.knob, was)
            self._out.discard(key)

    def record(self) -> list[dict[str, Any]]:
        """For the run's metadata: one entry per setting changed, with the values it took
        and who put it back (None: nobody could)."""
        entries = []
        for key, first in self._first.items():
            entry = dataclasses.asdict(first)
            del entry["value"]
            entry["values"] = list(self._values[key])
            entry["put_back_by"] = None if key in self._out else self._by.get(key)
            entries.append(entry)
        return entries
