"""The architectures the suite compares, their named sizes, and how to build and feed them.

Adding an architecture: write its module with an ``Architecture`` record (see
``carbonbench.models.architecture``) and add the record to ``BUILTIN`` below; or, from code
outside this package, ``register(record)``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys

import torch
from torch import nn

from carbonbench.models import gpt, recurrent, transformer
from carbonbench.models.architecture import Architecture, ArchitectureError
from carbonbench.models.config import field_names

BUILTIN: tuple[Architecture, ...] = (
    recurrent.ELMAN,
    recurrent.LSTM,
    recurrent.GRU,
    transformer.TRANSFORMER,
    recurrent.SEQ2SEQ_LSTM,
    gpt.GPT_ARCHITECTURE,
)
IMPLS = ("reference", "fused")  # the built-ins' variants
SIZES = ("tiny", "small", "base")  # < 1 M, 10-20 M and about 100 M parameters

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in BUILTIN}


def register(record: Architecture) -> Architecture:
    """Make ``record`` buildable by name (and so usable in suites), beside the built-ins."""
    if record.name in ARCHITECTURES and ARCHITECTURES[record.name] is not record:
        raise ArchitectureError(f"an architecture named {record.name!r} is already registered")
    ARCHITECTURES[record.name] = record
    return record


ENTRY_POINTS = "carbonbench.architectures"  # installed packages register records here
_plugins_loaded = False


def load_plugins() -> None:
    """Register the records that installed packages offer under the entry-point group
    ``carbonbench.architectures`` (name = package.module:RECORD), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        where = f"entry point {entry.name} = {entry.value} ({ENTRY_POINTS})"
        try:
            record = entry.load()
        except Exception as error:
            raise ArchitectureError(
                f"{where} cannot be loaded: {type(error).__name__}: {error}"
            ) from None
        if not isinstance(record, Architecture):
            raise ArchitectureError(f"{where} is {type(record).__name__}, not an Architecture")
        package = entry.dist.name if entry.dist is not None else "an installed package"
        source = f"{package} (entry point {entry.value})"
        ARCHITECTURES.setdefault(entry.name, dataclasses.replace(record, source=source))


def architecture(name: str) -> Architecture:
    """The record of a registered architecture (built in, registered, or offered by an
    installed package's entry point), or of ``package.module:attribute`` (imported as from
    the working directory, and registered under that name)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    load_plugins()
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name.startswith("hf:"):
        from carbonbench.models.hf import record

        return register(record(name))
    if ":" in name:
        return _imported(name)
    raise ArchitectureError(f"unknown architecture {name!r}; valid: {', '.join(ARCHITECTURES)}")


def _imported(spec: str) -> Architecture:
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:  # as ``python -m`` and pytest see the project
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ArchitectureError(
            f"architecture {spec!r}: cannot import {module_name!r} ({error}); give "
            "package.module:attribute of an Architecture record importable from here"
        ) from None
    record = getattr(module, attribute, None)
    if not isinstance(record, Architecture):
        raise ArchitectureError(
            f"architecture {spec!r}: {module_name}.{attribute} is "
            f"{'missing' if record is None else type(record).__name__}, not an Architecture "
            "record (carbonbench.models.Architecture)"
        )
    if record.source == "built-in":
        record = dataclasses.replace(record, source=spec)
    ARCHITECTURES[spec] = record
    return record


def generating() -> list[str]:
    """The architectures that can be measured generating (prefill and decode)."""
    return [name for name, a in ARCHITECTURES.items() if a.generates]


def make_config(name: str, size: str = "tiny", **overrides: object) -> object:
    """The named size of an architecture with any config field overridden."""
    arch = architecture(name)
    if size not in arch.sizes:
        raise ArchitectureError(f"unknown size {size!r} for {name}; valid: {', '.join(arch.sizes)}")
    valid = field_names(arch.config_cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ArchitectureError(
            f"unknown config field(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid)}"
        )
    try:
        return dataclasses.replace(arch.sizes[size], **overrides)
    except ValueError as error:  # the config's own checks (positive sizes, divisibility)
        raise ArchitectureError(f"{name}: {error}") from None


def build(name: str, size: str = "tiny", impl: str = "reference", **overrides: object) -> nn.Module:
    """Build architecture ``name`` at ``size`` as the ``reference`` or ``fused`` variant.

    The module is created on torch's current default device (``with torch.device("meta"):``
    builds without allocating) and carries ``arch``, ``config`` and ``impl`` attributes.
    """
    arch = architecture(name)
    if impl not in arch.builders:
        raise ArchitectureError(f"unknown impl {impl!r}; valid: {', '.join(arch.impls)}")
    config = make_config(name, size, **overrides)
    model = arch.builders[impl](config)
    model.arch, model.config, model.impl = name, config, impl
    return model


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def example_batch(
    name_or_model: str | nn.Module,
    batch_size: int,
    seq_len: int,
    vocab: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Positional inputs for ``model(*inputs)``: uniform random token ids, reproducible by seed.

    Language models get ``(tokens,)``; encoder-decoders get ``(src, tgt_in)``, both ``seq_len``
    long. ``vocab`` defaults to the model's (or, given a name, the tiny size's).
    """
    if isinstance(name_or_model, nn.Module):
        arch = architecture(name_or_model.arch)
        vocab = vocab or name_or_model.config.vocab
    else:
        arch = architecture(name_or_model)
        vocab = vocab or arch.sizes["tiny"].vocab
    if batch_size <= 0 or seq_len <= 0:
        raise ArchitectureError(
            f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}"
        )
    generator = torch.Generator().manual_seed(seed)
    tokens = arch.example_batch(vocab, batch_size, seq_len, generator)
    return tuple(t.to(device) for t in tokens) if device is not None else tokens
