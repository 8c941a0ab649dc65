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
    "EnergyMeter": "carbonbench.meter",
    "Measurement": "carbonbench.meter",
    "detect_sensors": "carbonbench.sensors",
    "Sensor": "carbonbench.sensors",
    "SensorFactory": "carbonbench.sensors",
    "SensorOptions": "carbonbench.sensors",
    "Suite": "carbonbench.suite",
    "Case": "carbonbench.case",
    "load_suite": "carbonbench.suite",
    "parse_suite": "carbonbench.suite",
    "Store": "carbonbench.store",
    "ResultRow": "carbonbench.store",
    "RunRecord": "carbonbench.store",
    "CarbonSettings": "carbonbench.carbon",
    "resolve_carbon": "carbonbench.carbon",
    "estimate": "carbonbench.estimate",
    "summarise": "carbonbench.summary",
    "track": "carbonbench.tracking",
    "Tracker": "carbonbench.tracking",
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
    from carbonbench import estimate
    from carbonbench.carbon import CarbonSettings
    from carbonbench.carbon import resolve as resolve_carbon
    from carbonbench.case import Case
    from carbonbench.errors import CarbonbenchError, InputError
    from carbonbench.meter import EnergyMeter, Measurement
    from carbonbench.sensors import Sensor, SensorFactory, SensorOptions, detect_sensors
    from carbonbench.store import ResultRow, RunRecord, Store
    from carbonbench.suite import Suite
    from carbonbench.suite import load as load_suite
    from carbonbench.suite import parse as parse_suite
    from carbonbench.summary import summarise
    from carbonbench.tracking import Tracker, track
