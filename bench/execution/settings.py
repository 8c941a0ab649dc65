"""A case's settings applied in the process that measures it, and put back after it.

``threads`` is torch's intra-op thread count: set before the case's model is built, restored
to what the process had after the case, so the next case starts from the machine's default.
(Inter-op threads can be set only once per process, before any parallel work, so they are not a
per-case setting; the worker leaves them at torch's default.)

The GPU settings (power limit, locked SM clock) are changed through
``carbonbench.energy.controls`` before the case's model is built, in this order: the original
read, the change declared (``DeviceChange``, to the supervisor, flushed before anything
changes), the change made; after the case, whatever ended it (an error, a second Ctrl-C), it is
put back and ``DeviceRestored`` said. A worker killed between the change and its undoing is put
right by its supervisor, which kept the declaration. A change NVML refuses fails the case.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

import torch

from carbonbench.energy import controls
from carbonbench.execution.coordination import CaseFailed
from carbonbench.execution.protocol import DeviceChange, DeviceRestored, Event
from carbonbench.suites.case import DEVICE_KNOBS, Case

log = logging.getLogger(__name__)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` (None: left alone) inside the block."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    if count > cores:
        log.warning(
            "threads = %d is more than this machine's %d CPUs: oversubscribed", count, cores
        )
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ignore(event: Event) -> None:
    pass


@contextlib.contextmanager
def gpu_settings(
    case: Case, device: str, declare: Callable[[Event], None] = _ignore
) -> Iterator[None]:
    """The case's GPU settings made on ``device`` inside the block, each declared to
    ``declare`` before it is made, and put back after it; CaseFailed if one cannot be made."""
    wanted = [(knob, value) for knob in DEVICE_KNOBS if (value := getattr(case, knob)) is not None]
    if not wanted:
        yield
        return
    made: list[controls.Change] = []
    try:
        with controls.nvml_session() as nvml:
            try:
                for knob, value in wanted:
                    control = controls.control(nvml, device, knob)
                    change = control.change(value)
                    declare(DeviceChange.of(change))
                    try:
                        control.apply(change)
                    except controls.SettingError:
                        declare(DeviceRestored.of(change))  # refused: nothing changed
                        raise
                    made.append(change)
                yield
            finally:
                for change in reversed(made):
                    if controls.put_back([change])[change.key] is not None:
                        declare(DeviceRestored.of(change))
    except controls.SettingError as error:  # NVML missing, or a change it refused
        raise CaseFailed(str(error)) from None


@contextlib.contextmanager
def applied(
    case: Case, declare: Callable[[Event], None] = _ignore, device: str | None = None
) -> Iterator[None]:
    """Every setting the case gives, in force inside the block and undone after it. GPU
    settings go to ``device`` (default: the case's own), each change declared to
    ``declare`` (a ``DeviceChange``, then a ``DeviceRestored``) for whoever outlives this
    process to put back."""
    with threads(case.threads), gpu_settings(case, device or case.device, declare):
        yield
