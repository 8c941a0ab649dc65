"""How the processes measuring one case decide together: alone (``Solo``), or as the ranks of a
distributed job (``carbonbench.execution.distributed.DdpCoordinator``). The case runner asks its
coordinator every question whose answer must be the same in every process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.execution.workloads import Work
from carbonbench.suites.case import Case


class CaseFailed(Exception):
    """A case could not be measured; the message becomes the row's error.

    ``agreed``: every process of a distributed run raised it at the same point (a decision
    taken together), so the run can go on to the next case. ``traceback``: where the case's
    own code raised, stored with its row.
    """

    def __init__(self, message: str, agreed: bool = False, traceback: str | None = None) -> None:
        super().__init__(message)
        self.agreed = agreed
        self.traceback = traceback


def case_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaseFailed(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    return device


class Solo:
    """One process measures the case: every decision is its own."""

    rank, world_size = 0, 1
    writes = True  # this process records rows

    def device_for(self, case: Case) -> torch.device:
        return case_device(case.device)

    def settings_device(self, case: Case) -> str:
        """The device whose settings (power limit, clocks) the case changes, named without
        torch: they are made before torch touches it."""
        return case.device

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
        """The module a step calls, when not the model itself."""
        return None

    def scale(self, work: Work) -> Work:
        """The work of one step of the whole job."""
        return work

    def agree(self, steps: int) -> int:
        """Steps per window, the same for every process."""
        return steps

    def agree_most(self, steps: int) -> int:
        """The largest of every process's ``steps`` (a window's extra steps, each rank asking
        for what its own clock needs)."""
        return steps

    def agree_flag(self, flag: bool) -> bool:
        """A decision every process takes together (stop, fail): True if any says so."""
        return flag

    def check_every_step(self) -> bool:
        """Whether the case's timeout may be checked between steps (alone: yes; a
        distributed job checks between windows only, where every rank is)."""
        return True

    def after_failure(self, case: Case, error: Exception, message: str) -> None:
        """Called once a failed case is recorded: a distributed job stops here unless every
        process failed the case together."""

    @contextmanager
    def window(self, meter: EnergyMeter, name: str) -> Iterator[Measurement]:
        with meter.window(name) as m:
            yield m

    def row_extra(self) -> dict[str, Any]:
        """What a measured row adds about the processes behind it."""
        return {}


SOLO = Solo()
