"""What the process that measures adds to a run's provenance: the GPUs, driver, CUDA build,
torch's threads, and the sensors with their constants.

Worker-side (it imports torch): the supervisor records ``carbonbench.energy.provenance.host``
and completes the run's record with what its first worker reports from here.
"""

from __future__ import annotations

from typing import Any

import torch

from carbonbench.energy.provenance import sensors_of


def measured_by(meter: Any) -> dict[str, Any]:
    """From the process that measures: GPUs, driver, CUDA, threads, sensors and constants."""
    return {
        **sensors_of(meter),
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
    }
