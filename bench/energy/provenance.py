"""What a reader needs to interpret a run, besides its rows: the software and the commit of
the code under test. Torch-free, for the supervisor's first record of a run; what the process
that measures adds (sensors, CUDA, threads) is ``carbonbench.execution.runtime``'s."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from carbonbench import __version__


def git_commit() -> str | None:
    """The commit of the working directory, ``-dirty`` when tracked files changed."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return done.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "carbonbench": __version__}
    for name in ("torch", "numpy", "pandas", "codecarbon", "nvidia-ml-py", "psutil"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def host() -> dict[str, Any]:
    """Cheap to learn, without torch: for the supervisor's first record of a run."""
    from carbonbench.energy.sensors.modelled import cpu_name

    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "versions": versions(),
        "git_commit": git_commit(),
    }


def sensors_of(meter: Any) -> dict[str, Any]:
    """What a meter measures with, without torch: the GPUs (NVML), the driver, every sensor
    with its domains, methods and constants, and what detection said."""
    from carbonbench.energy.hardware import Hardware

    sensors = {s.source: s.metadata() for s in meter.sensors}
    drivers = [m["driver"] for m in sensors.values() if m.get("driver")]
    return {
        "gpus": Hardware.here().gpus,
        "driver": drivers[0] if drivers else None,
        "sensors": {
            s.source: {
                "domains": list(s.domains),
                "methods": list(s.methods),
                "components": list(s.components),
                **sensors[s.source],
            }
            for s in meter.sensors
        },
        "sensor_constants": {s.source: s.constants() for s in meter.sensors},
        "diagnostics": [str(d) for d in meter.diagnostics],
    }
