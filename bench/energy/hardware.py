"""The machine a measurement ran on, described once for runs, resumes, the gate and the
pytest plugin alike."""

from __future__ import annotations

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
        """This machine: its host name, CPU model and the GPUs torch sees."""
        import torch

        from carbonbench.energy.sensors.modelled import cpu_name

        gpus: list[str] = []
        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return cls(socket.gethostname(), cpu_name(), gpus)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hardware:
        return cls(str(data.get("host") or ""), str(data.get("cpu") or ""), data.get("gpus") or [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comparable(self) -> dict[str, Any]:
        """What must match for two measurements to be compared (not the host's name: a
        fleet of identical machines is one hardware)."""
        return {"cpu": self.cpu, "gpus": list(self.gpus)}
