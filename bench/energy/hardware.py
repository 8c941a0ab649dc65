"""The machine a measurement ran on, described once for runs, resumes, the gate and the
pytest plugin alike.

Torch-free: the supervisor compares this machine with a stored run's before resuming it, so
the GPUs are named by NVML, as CUDA shows them (``CUDA_VISIBLE_DEVICES`` applied), in the
worker and the supervisor alike.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hardware:
    host: str
    cpu: str
    gpus: list[str] = field(default_factory=list)

    @classmethod
    def here(cls) -> Hardware:
        """This machine: its host name, CPU model and the GPUs CUDA shows."""
        from carbonbench.energy.sensors.modelled import cpu_name

        return cls(socket.gethostname(), cpu_name(), gpu_names())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hardware:
        return cls(str(data.get("host") or ""), str(data.get("cpu") or ""), data.get("gpus") or [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comparable(self) -> dict[str, Any]:
        """What must match for two measurements to be compared (not the host's name: a
        fleet of identical machines is one hardware)."""
        return {"cpu": self.cpu, "gpus": list(self.gpus)}


def gpu_names() -> list[str]:
    """The names of the GPUs CUDA shows, in its order; [] without NVML or an NVIDIA driver."""
    from carbonbench.energy.sensors.nvml import visible_handles

    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        handles = visible_handles(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        names = [pynvml.nvmlDeviceGetName(handle) for _, handle in handles]
        return [name.decode() if isinstance(name, bytes) else name for name in names]
    except pynvml.NVMLError:
        return []
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
