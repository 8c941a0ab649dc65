"""Reference neural architectures, each in a readable and a fused variant sharing weights."""

from models.config import RecurrentConfig, TransformerConfig
from models.registry import (
    ARCHITECTURES,
    IMPLS,
    SIZES,
    Architecture,
    build,
    count_parameters,
    example_batch,
    make_config,
)

__all__ = [
    "ARCHITECTURES",
    "IMPLS",
    "SIZES",
    "Architecture",
    "RecurrentConfig",
    "TransformerConfig",
    "build",
    "count_parameters",
    "example_batch",
    "make_config",
]
