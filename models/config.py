"""Model configurations: one frozen dataclass per model family, validated on creation.

Sizes are named points in these spaces (see ``carbonbench.models.registry``); any field can be
overridden.
Dropout defaults to 0.0 so that repeated measurements of one case do the same arithmetic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def _check_positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_dropout(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}")


# gate blocks per recurrent kind: weight_ih has GATES[kind] x hidden rows
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}


@dataclass(frozen=True)
class RecurrentConfig:
    """Embedding -> ``layers`` stacked recurrent layers of width ``hidden`` -> vocabulary."""

    vocab: int
    d_model: int  # embedding width, the first layer's input
    hidden: int  # recurrent state width
    layers: int
    dropout: float = 0.0  # between recurrent layers, as nn.RNN/LSTM/GRU apply it

    def __post_init__(self) -> None:
        _check_positive(self, "vocab", "d_model", "hidden", "layers")
        _check_dropout(self.dropout)


@dataclass(frozen=True)
class TransformerConfig:
    """A Transformer stack; ``layers`` counts each stack (encoder and decoder alike)."""

    vocab: int
    d_model: int
    heads: int
    layers: int
    hidden: int  # feed-forward inner width (4 x d_model in the usual shapes)
    max_len: int  # longest sequence the positional encoding covers
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_positive(self, "vocab", "d_model", "heads", "layers", "hidden", "max_len")
        _check_dropout(self.dropout)
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")


Config = RecurrentConfig | TransformerConfig


def field_names(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]
