"""Where this process stands in a torchrun (or ``--nproc``) job, read from torchrun's
environment variables. Torch-free: ``carbonbench run`` asks before it decides whether to
supervise rounds of workers (no torch) or to run as one rank of a distributed job.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    host: str


def topology_from_env() -> Topology | None:
    """The process's place in a torchrun (or --nproc) job; None outside one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    world = int(os.environ["WORLD_SIZE"])
    return Topology(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        host=socket.gethostname(),
    )
