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
