"""Attention and the other Transformer parts shared by the encoder-decoder and the GPT model.

Both variants use the same modules and parameters; only the attention core differs:
``reference`` spells out softmax(QK^T / sqrt(d_head)) V, ``fused`` calls
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carbonbench.models.architecture import ArchitectureError


def attend(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, impl: str, dropout: float, offset: int = 0
) -> Tensor:
    """Scaled dot-product attention over ``[batch, heads, len, d_head]`` tensors.

    ``causal`` lets query i see keys 0..i + ``offset`` (``offset`` = keys already cached before
    these queries). ``dropout`` is the probability to apply (0.0 outside training).
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    if impl == "fused":
        if causal and offset and q_len > 1:  # queries after a cache: bottom-right aligned mask
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(offset)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        is_causal = causal and not (offset and q_len == 1)  # one new query sees every key
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=is_causal)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        visible = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(offset)
        scores = scores.masked_fill(~visible, float("-inf"))
    weights = F.dropout(scores.softmax(dim=-1), dropout, training=dropout > 0)
    return weights @ v


def _split_heads(x: Tensor, heads: int) -> Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)


class LayerCache:
    """Keys and values of the tokens seen so far by one attention layer (for generation)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is not None and self.v is not None:
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v
        return k, v


class SelfAttention(nn.Module):
    """Multi-head self-attention with one packed Q/K/V projection (one matmul, not three)."""

    def __init__(self, d_model: int, heads: int, dropout: float, impl: str, causal: bool) -> None:
        super().__init__()
        self.heads, self.dropout, self.impl, self.causal = heads, dropout, impl, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, cache: LayerCache | None = None) -> Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        offset = 0
        if cache is not None:
            offset = cache.length
            k, v = cache.extend(k, v)
        p = self.dropout if self.training else 0.0
        y = attend(q, k, v, causal=self.causal, impl=self.impl, dropout=p, offset=offset)
        return self.proj(_merge_heads(y))


class CrossAttention(nn.Module):
    """Multi-head attention of decoder queries over the encoder's output (``memory``)."""

    def __init__(self, d_model: int, heads: int, dropout: float, impl: str) -> None:
        super().__init__()
        self.heads, self.dropout, self.impl = heads, dropout, impl
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        q = _split_heads(self.q(x), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.kv(memory).chunk(2, dim=-1))
        p = self.dropout if self.training else 0.0
        return self.proj(_merge_heads(attend(q, k, v, causal=False, impl=self.impl, dropout=p)))


class FeedForward(nn.Module):
    """Position-wise feed-forward: Linear -> activation -> Linear."""

    def __init__(self, d_model: int, hidden: int, activation: nn.Module) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.act = activation
        self.down = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))


def sinusoidal_encoding(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same), as in Vaswani et al."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    exponents = torch.arange(0, d_model, 2, dtype=torch.float32) / d_model
    inv_freq = torch.exp(-math.log(1e4) * exponents)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return pe


def check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ArchitectureError(
            f"sequence length {length} exceeds max_len {max_len}; "
            f"build the model with max_len={length} or more"
        )
