"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Post-norm residual blocks (x = LayerNorm(x + sublayer(x))), ReLU feed-forward, sinusoidal
positions, one embedding shared by source, target and the output projection (section 3.4),
embeddings scaled by sqrt(d_model). The decoder's self-attention is causal.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from carbonbench.models.attention import (
    CrossAttention,
    FeedForward,
    SelfAttention,
    check_length,
    sinusoidal_encoding,
)
from carbonbench.models.config import TransformerConfig


class EncoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig, impl: str) -> None:
        super().__init__()
        self.attn = SelfAttention(c.d_model, c.heads, c.dropout, impl, causal=False)
        self.norm1 = nn.LayerNorm(c.d_model)
        self.ff = FeedForward(c.d_model, c.hidden, nn.ReLU())
        self.norm2 = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig, impl: str) -> None:
        super().__init__()
        self.self_attn = SelfAttention(c.d_model, c.heads, c.dropout, impl, causal=True)
        self.norm1 = nn.LayerNorm(c.d_model)
        self.cross_attn = CrossAttention(c.d_model, c.heads, c.dropout, impl)
        self.norm2 = nn.LayerNorm(c.d_model)
        self.ff = FeedForward(c.d_model, c.hidden, nn.ReLU())
        self.norm3 = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory)))
        return self.norm3(x + self.drop(self.ff(x)))


class Transformer(nn.Module):
    """``forward(src, tgt_in)`` -> logits ``[batch, tgt_len, vocab]`` (teacher forcing)."""

    def __init__(self, config: TransformerConfig, impl: str) -> None:
        super().__init__()
        self.config, self.impl = config, impl
        c = config
        self.embed = nn.Embedding(c.vocab, c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)  # unit scale after x sqrt(d)
        self.register_buffer("pe", sinusoidal_encoding(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(c, impl) for _ in range(c.layers))
        self.decoder = nn.ModuleList(DecoderLayer(c, impl) for _ in range(c.layers))
        self.head = nn.Linear(c.d_model, c.vocab, bias=False)
        self.head.weight = self.embed.weight  # tied, as in the paper

    def _embed(self, tokens: Tensor) -> Tensor:
        check_length(tokens.shape[1], self.config.max_len)
        x = self.embed(tokens) * math.sqrt(self.config.d_model)
        return self.drop(x + self.pe[: tokens.shape[1]])

    def encode(self, src: Tensor) -> Tensor:
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x)
        return x

    def decode(self, tgt_in: Tensor, memory: Tensor) -> Tensor:
        x = self._embed(tgt_in)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.head(x)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, self.encode(src))


# the builders the record in carbonbench.models.catalog names


def transformer_reference(c: TransformerConfig) -> Transformer:
    return Transformer(c, "reference")


def transformer_fused(c: TransformerConfig) -> Transformer:
    return Transformer(c, "fused")
