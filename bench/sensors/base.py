"""The one interface every power source implements, and how sources report trouble."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

Method = Literal["counter", "power-sampled", "modelled"]
METHODS: tuple[Method, ...] = ("counter", "power-sampled", "modelled")


@dataclass(frozen=True)
class Diagnostic:
    """Why a better measurement is unavailable (or was lost), and how to fix it."""

    source: str  # "rapl", "nvml", ...
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.problem}" + (f" Fix: {self.fix}" if self.fix else "")


class SensorUnavailable(Exception):
    """A source that cannot measure on this machine; carries the diagnostic to show."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


class Sensor(ABC):
    """A power source exposing one or more energy domains (``gpu:0``, ``cpu:package-0``, ...).

    ``read(now)`` returns, per domain, the joules accumulated since the sensor was created and
    the present power in watts. Counter sources read their counters (catching wrap-arounds);
    power-sampled and modelled sources integrate power between calls. The meter calls ``read``
    from its sampler thread and at window edges, one call at a time.
    """

    source: str
    domains: tuple[str, ...]
    methods: tuple[Method, ...]
    # False for domains that overlap others (e.g. RAPL psys contains the packages): reported,
    # never added to the total.
    additive: tuple[bool, ...]

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []  # trouble met while running

    @abstractmethod
    def read(self, now: float) -> tuple[list[float], list[float]]:
        """(cumulative joules, watts) per domain at monotonic time ``now`` (seconds)."""

    def constants(self) -> dict[str, object]:
        """Inputs and constants the numbers depend on, recorded with every measurement."""
        return {}

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release handles and files."""
