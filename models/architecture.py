"""The record of an architecture: everything the harness asks of one, in one place.

A new architecture is one file (its module and its ``Architecture`` record) and one line in
``carbonbench.models.registry.BUILTIN``; nothing outside ``carbonbench.models`` names it.
Records import no torch: the supervisor lists and validates suites with them, and only a
worker, building a module, imports torch (see ``Architecture.builders``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from carbonbench.errors import InputError

if TYPE_CHECKING:
    from torch import nn

Kind = Literal["language-model", "encoder-decoder", "masked-lm"]
KINDS: tuple[Kind, ...] = ("language-model", "encoder-decoder", "masked-lm")
# a config -> the module, on torch's default device; or "package.module:function" of one
Builder = Callable[[object], "nn.Module"] | str


class ArchitectureError(InputError):
    """An unknown architecture, size, impl or config field: the message lists the valid ones."""


@dataclass(frozen=True)
class Architecture:
    """An architecture as the harness sees it.

    ``kind`` decides its inputs and targets: a language model reads ``(tokens,)`` and predicts
    each next token; an encoder-decoder reads ``(src, tgt_in)`` and predicts the target; a
    masked language model reads ``(tokens,)`` with some replaced by a mask id (the vocabulary's
    last) and predicts the originals there.
    ``builders``: impl (reference, fused) -> a callable ``config -> nn.Module``, or the
    ``"package.module:function"`` of one, imported on first build. A record whose builders are
    strings imports no torch, which keeps listing and validating suites (the supervisor's
    work) free of torch; the built-ins are written so (``carbonbench.models.catalog``).
    ``generates``: the module keeps a key/value cache, so the harness can measure ``prefill``
    and ``decode``. Its protocol: ``new_cache()``, ``forward(tokens, cache)`` (the tokens
    continue the cached ones; the first call's are the prompt), ``cache_length(cache)`` and
    ``rewind(cache, length)`` (back to an earlier length, for the next decode).
    ``analytic_flops`` writes the forward FLOPs out by hand (a check on the counted ones); None
    where nobody has.
    """

    name: str
    description: str
    kind: Kind
    config_cls: type
    sizes: Mapping[str, object]  # named sizes (tiny, small, base) -> config
    builders: Mapping[str, Builder]  # impl (reference, fused) -> builder
    analytic_flops: Callable[[object, int, int], int] | None = None  # (config, batch, seq_len)
    generates: bool = False
    source: str = "built-in"  # where the record comes from, for listings

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArchitectureError(
                f"architecture {self.name!r}: kind must be one of {', '.join(KINDS)}, "
                f"got {self.kind!r}"
            )
        if not self.sizes or not self.builders:
            raise ArchitectureError(f"architecture {self.name!r} needs sizes and builders")
        for impl, builder in self.builders.items():
            if isinstance(builder, str) and builder.count(":") != 1:
                raise ArchitectureError(
                    f"architecture {self.name!r}: builder {impl!r} is {builder!r}; give "
                    "a callable or 'package.module:function'"
                )

    @property
    def encoder_decoder(self) -> bool:
        return self.kind == "encoder-decoder"

    @property
    def impls(self) -> tuple[str, ...]:
        return tuple(self.builders)

    @property
    def counting_impl(self) -> str:
        """The variant whose arithmetic the FLOP counter sees: the reference one, written out
        in matrix products, where there is one (fused kernels hide theirs)."""
        return "reference" if "reference" in self.builders else self.impls[0]

    def builder(self, impl: str) -> Callable[[object], nn.Module]:
        """The callable that builds ``impl``, its module imported now if it was named."""
        if impl not in self.builders:
            raise ArchitectureError(f"unknown impl {impl!r}; valid: {', '.join(self.impls)}")
        builder = self.builders[impl]
        if not isinstance(builder, str):
            return builder
        module_name, _, attribute = builder.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ArchitectureError(
                f"{self.name} {impl}: cannot import {module_name!r} ({error})"
            ) from None
        found = getattr(module, attribute, None)
        if not callable(found):
            raise ArchitectureError(f"{self.name} {impl}: {builder} is not a callable")
        return found
