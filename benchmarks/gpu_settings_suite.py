"""Write the built-in gpu-settings suite with power limits from this GPU's own range.

The built-in suite names limits for an H100 or H200 SXM (200-700 W); another GPU's range
differs, and a limit outside it is refused before anything runs. This writes the suite with
three limits the device accepts: its maximum, and about 75% and 55% of it (never below its
minimum), read through NVML.

    python benchmarks/gpu_settings_suite.py OUT.toml
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

import pynvml


def limits_w(index: int = 0) -> list[int]:
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        low_mw, high_mw = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    finally:
        pynvml.nvmlShutdown()
    low, high = low_mw // 1000, high_mw // 1000
    return list(dict.fromkeys(max(low, round(high * f / 10) * 10) for f in (1.0, 0.75, 0.55)))


def main(out: str) -> None:
    text = resources.files("carbonbench.suites").joinpath("gpu-settings.toml").read_text()
    values = limits_w()
    text = re.sub(r"(?m)^power_limit_w = \[.*\]$", f"power_limit_w = {values}", text)
    Path(out).write_text(text)
    print(f"{out}: power_limit_w = {values}")


if __name__ == "__main__":
    main(sys.argv[1])
