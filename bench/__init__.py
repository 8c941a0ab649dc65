"""carbonbench: measure the energy and carbon of neural-network architectures.

The public API, imported on first use so that ``import carbonbench`` (and the command line)
does not load torch until something needs it::

    from carbonbench import EnergyMeter, detect_sensors
    with EnergyMeter() as meter, meter.window("step") as m:
        ...
    print(m.total_energy_j, m.method)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("carbonbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# name -> module that defines it
_API = {
    "EnergyMeter": "carbonbench.energy.meter",
    "Measurement": "carbonbench.energy.meter",
    "detect_sensors": "carbonbench.energy.sensors",
    "Sensor": "carbonbench.energy.sensors",
    "SensorFactory": "carbonbench.energy.sensors",
    "SensorOptions": "carbonbench.energy.sensors",
    "Suite": "carbonbench.suites.suite",
    "Case": "carbonbench.suites.case",
    "load_suite": "carbonbench.suites.suite",
    "parse_suite": "carbonbench.suites.suite",
    "Store": "carbonbench.results.store",
    "ResultRow": "carbonbench.results.store",
    "RunRecord": "carbonbench.results.store",
    "CarbonSettings": "carbonbench.energy.carbon",
    "resolve_carbon": "carbonbench.energy.carbon",
    "estimate": "carbonbench.analysis.estimate",
    "summarise": "carbonbench.analysis.summary",
    "track": "carbonbench.integrations.tracking",
    "Tracker": "carbonbench.integrations.tracking",
    "CarbonbenchError": "carbonbench.errors",
    "InputError": "carbonbench.errors",
}
_RENAMED = {"load_suite": "load", "parse_suite": "parse", "resolve_carbon": "resolve"}

__all__ = [
    "CarbonSettings",
    "CarbonbenchError",
    "Case",
    "EnergyMeter",
    "InputError",
    "Measurement",
    "ResultRow",
    "RunRecord",
    "Sensor",
    "SensorFactory",
    "SensorOptions",
    "Store",
    "Suite",
    "Tracker",
    "__version__",
    "detect_sensors",
    "estimate",
    "load_suite",
    "parse_suite",
    "resolve_carbon",
    "summarise",
    "track",
]
assert set(__all__) == {"__version__", *_API}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'carbonbench' has no attribute {name!r}")
    if name == "estimate":
        value: Any = importlib.import_module(module)
    else:
        value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from carbonbench.analysis import estimate
    from carbonbench.analysis.summary import summarise
    from carbonbench.energy.carbon import CarbonSettings
    from carbonbench.energy.carbon import resolve as resolve_carbon
    from carbonbench.energy.meter import EnergyMeter, Measurement
    from carbonbench.energy.sensors import Sensor, SensorFactory, SensorOptions, detect_sensors
    from carbonbench.errors import CarbonbenchError, InputError
    from carbonbench.integrations.tracking import Tracker, track
    from carbonbench.results.store import ResultRow, RunRecord, Store
    from carbonbench.suites.case import Case
    from carbonbench.suites.suite import Suite
    from carbonbench.suites.suite import load as load_suite
    from carbonbench.suites.suite import parse as parse_suite
