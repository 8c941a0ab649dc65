"""Reference neural architectures, each in a readable and a fused variant sharing weights.

The records and the registry import no torch (the supervisor reads suites with them);
``build``, ``count_parameters`` and ``example_batch`` are imported on first use, with torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from carbonbench.models.architecture import Architecture, ArchitectureError, Kind
from carbonbench.models.config import RecurrentConfig, TransformerConfig
from carbonbench.models.registry import (
    ARCHITECTURES,
    IMPLS,
    SIZES,
    architecture,
    generating,
    load_plugins,
    make_config,
    register,
)

# name -> the module that defines it, imported on first use: these need torch
_TORCH = {
    "build": "carbonbench.models.building",
    "count_parameters": "carbonbench.models.building",
    "example_batch": "carbonbench.models.building",
}

__all__ = [
    "ARCHITECTURES",
    "IMPLS",
    "SIZES",
    "Architecture",
    "ArchitectureError",
    "Kind",
    "RecurrentConfig",
    "TransformerConfig",
    "architecture",
    "build",
    "count_parameters",
    "example_batch",
    "generating",
    "load_plugins",
    "make_config",
    "register",
]


def __getattr__(name: str) -> Any:
    module = _TORCH.get(name)
    if module is None:
        raise AttributeError(f"module 'carbonbench.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from carbonbench.models.building import build, count_parameters, example_batch
