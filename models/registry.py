"""The architectures the suite compares, by name: built in, registered, or imported.

Adding an architecture: write its module and an ``Architecture`` record (see
``carbonbench.models.architecture``) and add the record to ``BUILTIN`` in
``carbonbench.models.catalog``; or, from code outside this package, ``register(record)``.
Torch-free, so that the supervisor reads suites without torch: building and feeding the
modules is ``carbonbench.models.building``'s.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys

from carbonbench.models.architecture import Architecture, ArchitectureError
from carbonbench.models.catalog import BUILTIN
from carbonbench.models.config import field_names

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
