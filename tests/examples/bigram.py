"""A bigram language model: next-token logits looked up in a table. No matrix product, so
the FLOP counter sees nothing, and its FLOPs are stored as unknown (null), never 0."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from carbonbench.models import Architecture


@dataclass(frozen=True)
class BigramConfig:
    vocab: int = 128
    dropout: float = 0.0


class Bigram(nn.Module):
    def __init__(self, c: BigramConfig) -> None:
        super().__init__()
        self.table = nn.Embedding(c.vocab, c.vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.table(tokens)


BIGRAM = Architecture(
    name="bigram",
    description="bigram language model (a lookup table)",
    kind="language-model",
    config_cls=BigramConfig,
    sizes={"tiny": BigramConfig()},
    builders={"fused": Bigram},
    source="tests.examples.bigram",
)
