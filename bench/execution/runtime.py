"""What the process that measures adds to a run's provenance: the GPUs, driver, CUDA build,
torch's threads, and the sensors with their constants.

Worker-side (it imports torch): the supervisor records ``carbonbench.energy.provenance.host``
and completes the run's record with what its first worker reports from here.
"""

from __future__ import annotations

from typing import Any

import torch

from carbonbench.energy.hardware import Hardware


def measured_by(meter: Any) -> dict[str, Any]:
    """From the process that measures: GPUs, driver, CUDA, threads, sensors and constants."""
    sensors = {s.source: s.metadata() for s in meter.sensors}
    drivers = [m["driver"] for m in sensors.values() if m.get("driver")]
    return {
        "gpus": Hardware.here().gpus,
        "driver": drivers[0] if drivers else None,
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
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
