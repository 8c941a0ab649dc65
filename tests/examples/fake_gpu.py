"""A GPU for tests that several processes see alike: pynvml's functions replaced by ones that
read and write one JSON file, so a supervisor (the test process, or a command it starts) and
its workers change and read the same power limit and clocks.

``CARBONBENCH_TEST_GPU`` names the file (``write_state`` makes it). ``install(patch)`` replaces
the functions through ``patch(name, function)``: a test passes monkeypatch's; a worker process
gets them from the ``sitecustomize.py`` that ``site_dir`` writes, on its PYTHONPATH (``env``).
Set ``die_on_set_to`` (mW or MHz) and the process that sets that value kills itself with
SIGKILL right after the file records it, as the OOM killer would (``hang_on_set_to``: it
hangs there instead). Only the hardware is fake: carbonbench's own code runs as it is.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pynvml

ENV = "CARBONBENCH_TEST_GPU"
REPO = Path(__file__).resolve().parents[2]


def default_state() -> dict[str, Any]:
    gpu = {
        "uuid": "GPU-f4ce0000-0000",
        "name": "NVIDIA H100 80GB HBM3",
        "min_mw": 200_000,
        "max_mw": 700_000,
        "limit_mw": 700_000,
        "max_sm_mhz": 1980,
        "memory_mhz": [2619],
        "graphics_mhz": [1980, 1410, 1005, 345],
        "locked": None,  # [min, max] MHz when locked
        "energy_mj": 1_000_000,
        "power_mw": 100_000,
    }
    return {
        "gpus": [gpu],
        "permitted": True,  # setting is allowed (root)
        "supported": True,  # the board lets NVML change its power limit and clocks
        "die_on_set_to": None,
        "hang_on_set_to": None,
        "log": [],  # every set: [pid, function, value]
    }


def write_state(path: Path, **changes: Any) -> Path:
    """A fresh fake GPU in ``path``: ``default_state()`` with ``changes``."""
    _save(path, {**default_state(), **changes})
    return path


def read_state(path: Path | None = None) -> dict[str, Any]:
    return json.loads((path or Path(os.environ[ENV])).read_text())


def _save(path: Path, state: dict[str, Any]) -> None:
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(state))
    os.replace(part, path)  # readers see the old state or the new, never half of one


def _error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _gpu(handle: int) -> dict[str, Any]:
    return read_state()["gpus"][handle]


def _set(handle: int, function: str, value: int, **fields: Any) -> None:
    state = read_state()
    if not state["supported"]:
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    if not state["permitted"]:
        raise _error(pynvml.NVML_ERROR_NO_PERMISSION)
    state["gpus"][handle].update(fields)
    state["log"].append([os.getpid(), function, value])
    _save(Path(os.environ[ENV]), state)
    if state["die_on_set_to"] == value:
        os.kill(os.getpid(), signal.SIGKILL)
    if state["hang_on_set_to"] == value:
        threading.Event().wait()


def nvmlInit() -> None:
    pass


def nvmlShutdown() -> None:
    pass


def nvmlSystemGetDriverVersion() -> str:
    return "555.42.06"


def nvmlDeviceGetCount() -> int:
    return len(read_state()["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if index >= nvmlDeviceGetCount():
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    return index


def nvmlDeviceGetUUID(handle: int) -> str:
    return _gpu(handle)["uuid"]


def nvmlDeviceGetName(handle: int) -> str:
    return _gpu(handle)["name"]


def nvmlDeviceGetTotalEnergyConsumption(handle: int) -> int:
    return _gpu(handle)["energy_mj"]


def nvmlDeviceGetFieldValues(handle: int, fields: list[int]) -> list:
    raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)  # no instant power: the 1 s average


def nvmlDeviceGetPowerUsage(handle: int) -> int:
    return _gpu(handle)["power_mw"]


def nvmlDeviceGetPowerManagementLimitConstraints(handle: int) -> list[int]:
    if not read_state()["supported"]:
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    gpu = _gpu(handle)
    return [gpu["min_mw"], gpu["max_mw"]]


def nvmlDeviceGetPowerManagementLimit(handle: int) -> int:
    return _gpu(handle)["limit_mw"]


def nvmlDeviceSetPowerManagementLimit(handle: int, limit_mw: int) -> None:
    gpu = _gpu(handle)
    if not gpu["min_mw"] <= limit_mw <= gpu["max_mw"]:
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    _set(handle, "nvmlDeviceSetPowerManagementLimit", limit_mw, limit_mw=limit_mw)


def nvmlDeviceGetMaxClockInfo(handle: int, clock: int) -> int:
    assert clock == pynvml.NVML_CLOCK_SM
    if not read_state()["supported"]:
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return _gpu(handle)["max_sm_mhz"]


def nvmlDeviceGetSupportedMemoryClocks(handle: int) -> list[int]:
    return _gpu(handle)["memory_mhz"]


def nvmlDeviceGetSupportedGraphicsClocks(handle: int, memory_mhz: int) -> list[int]:
    return _gpu(handle)["graphics_mhz"]


def nvmlDeviceSetGpuLockedClocks(handle: int, low: int, high: int) -> None:
    _set(handle, "nvmlDeviceSetGpuLockedClocks", low, locked=[low, high])


def nvmlDeviceResetGpuLockedClocks(handle: int) -> None:
    _set(handle, "nvmlDeviceResetGpuLockedClocks", 0, locked=None)


FUNCTIONS = {name: value for name, value in globals().items() if name.startswith("nvml")}


def install(patch: Any) -> None:
    """Replace pynvml's functions by this file's, through ``patch(name, function)``."""
    for name, function in FUNCTIONS.items():
        patch(name, function)


SITECUSTOMIZE = f"""\
import os
if os.environ.get({ENV!r}):
    import pynvml
    from tests.examples import fake_gpu
    fake_gpu.install(lambda name, function: setattr(pynvml, name, function))
"""


def site_dir(folder: Path) -> Path:
    """A folder holding a sitecustomize.py that installs the fake in every Python process
    started with it on PYTHONPATH and ``CARBONBENCH_TEST_GPU`` set."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def env(folder: Path, state: Path) -> dict[str, str]:
    """The environment variables that give a child process (and its children) the fake."""
    path = [str(site_dir(folder)), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p), ENV: str(state)}
