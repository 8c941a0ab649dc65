"""A decoder-only Transformer language model, as GPT-2 and today's LLMs are built.

Pre-norm blocks (x = x + sublayer(LayerNorm(x))), causal self-attention, GELU feed-forward,
learned positions, a final LayerNorm and an output projection tied to the token embedding.
Initialisation follows GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 x layers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from carbonbench.models.attention import FeedForward, LayerCache, SelfAttention, check_length
from carbonbench.models.config import TransformerConfig


class Block(nn.Module):
    def __init__(self, c: TransformerConfig, impl: str) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model)
        self.attn = SelfAttention(c.d_model, c.heads, c.dropout, impl, causal=True)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.mlp = FeedForward(c.d_model, c.hidden, nn.GELU())
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, cache: LayerCache | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cache))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    """``forward(tokens [batch, time])`` -> next-token logits ``[batch, time, vocab]``."""

    def __init__(self, config: TransformerConfig, impl: str) -> None:
        super().__init__()
        self.config, self.impl = config, impl
        c = config
        self.tok = nn.Embedding(c.vocab, c.d_model)
        self.pos = nn.Embedding(c.max_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c, impl) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab, bias=False)
        self.head.weight = self.tok.weight  # tied
        self.apply(self._init)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.down):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * c.layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self) -> list[LayerCache]:
        """An empty key/value cache for ``forward(tokens, cache)``: one entry per block."""
        return [LayerCache() for _ in self.blocks]

    def cache_length(self, cache: list[LayerCache]) -> int:
        return cache[0].length

    def rewind(self, cache: list[LayerCache], length: int) -> None:
        """Back to the first ``length`` tokens (extending builds new tensors: these stay)."""
        for layer in cache:
            if layer.k is not None and layer.v is not None:
                layer.k, layer.v = layer.k[..., :length, :], layer.v[..., :length, :]

    def forward(self, tokens: Tensor, cache: list[LayerCache] | None = None) -> Tensor:
        """With a ``cache``, ``tokens`` continue the cached ones: their keys and values are
        appended, so generating one token costs one token's forward, not the whole prefix's."""
        past = cache[0].length if cache is not None else 0
        length = tokens.shape[1]
        check_length(past + length, self.config.max_len)
        positions = torch.arange(past, past + length, device=tokens.device)
        x = self.drop(self.tok(tokens) + self.pos(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache is not None else None)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, prompt: Tensor, new_tokens: int) -> Tensor:
        """Greedy decoding with the key/value cache: ``[batch, prompt + new_tokens]``."""
        cache = self.new_cache()
        logits = self(prompt, cache)
        out = [prompt]
        for _ in range(new_tokens):
            token = logits[:, -1:].argmax(-1)
            out.append(token)
            logits = self(token, cache)
        return torch.cat(out, dim=1)


# the builders the record in carbonbench.models.catalog names


def gpt_reference(c: TransformerConfig) -> GPT:
    return GPT(c, "reference")


def gpt_fused(c: TransformerConfig) -> GPT:
    return GPT(c, "fused")
