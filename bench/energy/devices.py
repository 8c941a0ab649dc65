"""Whether this machine has the devices a suite asks for, asked of NVML, never of torch.

The supervisor must not import torch (seconds of start-up, and CUDA state in the one process
that outlives every case), so the CUDA GPUs are counted through NVML, as CUDA would show them
under ``CUDA_VISIBLE_DEVICES``. A suite asking for a GPU this machine lacks is bad input,
refused before anything is stored, not a run of failed rows. Only cpu and cuda can be checked
here; other device types (mps, xpu, ...) need torch to find and are left to the worker.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from typing import Any

from carbonbench.energy.sensors.nvml import visible_handles
from carbonbench.errors import InputError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def _nvml() -> Any | None:
    """The started pynvml module, or None: not installed, or no driver (nvmlInit fails)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def _counts() -> tuple[int, int]:
    """(GPUs NVML finds, GPUs CUDA would show after CUDA_VISIBLE_DEVICES)."""
    nvml = _nvml()
    if nvml is None:
        return 0, 0
    try:
        total = nvml.nvmlDeviceGetCount()
        return total, len(visible_handles(nvml, os.environ.get("CUDA_VISIBLE_DEVICES")))
    except nvml.NVMLError:
        return 0, 0
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def cuda_device_count() -> int:
    """The CUDA GPUs a worker would see: NVML's, narrowed by CUDA_VISIBLE_DEVICES (a comma
    list of indices or GPU-<uuid> prefixes; empty: none); 0 without NVML or a driver."""
    return _counts()[1]


def check_devices(devices: Iterable[str]) -> None:
    """Refuse (InputError) a cpu/cuda/cuda:N device this machine lacks, naming those it has."""
    wanted = list(dict.fromkeys(devices))
    asked = [(d, m) for d in wanted if (m := _CUDA.fullmatch(d))]
    if not asked:
        return
    total, count = _counts()
    for device, match in asked:
        index = int(match[1]) if match[1] is not None else 0
        if index < count:
            continue
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if count == 0:
            why = "NVML found none" if total == 0 else f"CUDA_VISIBLE_DEVICES={visible!r} hides"
            if total:
                why += f" the {total} NVML found"
            fix = "run a CPU suite such as smoke"
            if "cpu" in wanted:
                fix += ", or give --device cpu"
            raise InputError(
                f"suite asks for {device} but this machine has no CUDA GPU ({why}): {fix}"
            )
        names = ", ".join(f"cuda:{i}" for i in range(count))
        gpus = "1 CUDA GPU" if count == 1 else f"{count} CUDA GPUs"
        shown = f", of {total}, under CUDA_VISIBLE_DEVICES={visible!r}" if count < total else ""
        raise InputError(
            f"suite asks for {device} but this machine has {gpus} ({names}{shown}): "
            "narrow the suite with --device, or change its [matrix].device"
        )
