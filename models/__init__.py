"""Reference neural architectures, each in a readable and a fused variant sharing weights."""

from carbonbench.models.architecture import Architecture, ArchitectureError, Kind
from carbonbench.models.config import RecurrentConfig, TransformerConfig
from carbonbench.models.registry import (
    ARCHITECTURES,
    IMPLS,
    SIZES,
    architecture,
    build,
    count_parameters,
    example_batch,
    generating,
    load_plugins,
    make_config,
    register,
)

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
