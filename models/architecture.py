"""The record of an architecture: everything the harness asks of one, in one place.

A new architecture is one file (its module and its ``Architecture`` record) and one line in
``carbonbench.models.registry.BUILTIN``; nothing outside ``carbonbench.models`` names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from carbonbench.errors import InputError

Kind = Literal["language-model", "encoder-decoder", "masked-lm"]
KINDS: tuple[Kind, ...] = ("language-model", "encoder-decoder", "masked-lm")
Builder = Callable[[object], nn.Module]  # a config -> the module, on torch's default device


class ArchitectureError(InputError):
    """An unknown architecture, size, impl or config field: the message lists the valid ones."""


@dataclass(frozen=True)
class Architecture:
    """An architecture as the harness sees it.

    ``kind`` decides its inputs and targets: a language model reads ``(tokens,)`` and predicts
    each next token; an encoder-decoder reads ``(src, tgt_in)`` and predicts the target; a
    masked language model reads ``(tokens,)`` with some replaced by a mask id (the vocabulary's
    last) and predicts the originals there.
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

    def example_batch(
        self, vocab: int, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Positional inputs: uniform random token ids, one tensor per input."""
        count = 2 if self.encoder_decoder else 1
        tokens = torch.randint(0, vocab, (count, batch_size, seq_len), generator=generator)
        return tuple(tokens)
