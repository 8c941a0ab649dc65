"""The one interface every power source implements, and how sources report trouble."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Method = Literal["counter", "power-sampled", "modelled"]
METHODS: tuple[Method, ...] = ("counter", "power-sampled", "modelled")
# What a domain's energy belongs to; detection fills each component with its best source.
# "platform" (RAPL psys: the whole board) overlaps the others and is never added to them.
Component = Literal["gpu", "cpu", "memory", "platform"]
COMPONENTS: tuple[Component, ...] = ("gpu", "cpu", "memory")  # what every machine should cover


@dataclass(frozen=True)
class Diagnostic:
    """Why a better measurement is unavailable (or was lost), and how to fix it."""

    source: str  # "rapl", "nvml", ...
    problem: str
    fix: str = ""
    components: tuple[str, ...] = ()  # what it leaves measured worse (all its domains)
    domains: tuple[str, ...] = ()  # or just these domains

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
    components: tuple[Component, ...]  # per domain
    # False for domains that overlap others (e.g. RAPL psys contains the packages): reported,
    # never added to the total.
    additive: tuple[bool, ...]

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []  # trouble met while running

    @abstractmethod
    def read(self, now: float) -> tuple[list[float], list[float]]:
        """(cumulative joules, watts) per domain at monotonic time ``now`` (seconds)."""

    @property
    def covers(self) -> frozenset[str]:
        """The components this source measures (detection skips worse sources for them)."""
        return frozenset(self.components)

    def constants(self) -> dict[str, object]:
        """Inputs and constants the numbers depend on, recorded with every measurement."""
        return {}

    def metadata(self) -> dict[str, object]:
        """What a reader of a run needs about the hardware behind it: devices, driver."""
        return {}

    def basis(self) -> str:
        """One line on what a modelled or sampled figure rests on, for listings ("" if none)."""
        return ""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release handles and files."""


@dataclass(frozen=True)
class SensorOptions:
    """What the user may tell detection about this machine."""

    cpu_tdp_w: float | None = None  # the CPU model's P_max
    ram_w_per_gb: float | None = None  # the RAM model's watts per GB in use
    gpus: str | None = None  # which GPUs, as CUDA_VISIBLE_DEVICES (default: that variable)
    first_gpu_index: int = 0  # torch's index of the first of them (one rank's own GPU)


@dataclass(frozen=True)
class SensorFactory:
    """One entry of the detection list: a source and the components it can measure.

    ``create`` raises ``SensorUnavailable`` (with the reason and the fix) where the source
    cannot run; it is called only while one of ``components`` is still uncovered."""

    name: str
    components: frozenset[str]
    create: Callable[[SensorOptions], Sensor]
