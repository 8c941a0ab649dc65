"""Hugging Face architectures, built from transformers' config classes with random weights:
``hf:gpt2`` (decoder-only language model), ``hf:bert`` (masked language model) and ``hf:t5``
(encoder-decoder). Nothing is downloaded: no weights, no tokenizer (inputs are token ids).

Sizes use the built-in Transformer's config fields (vocab, d_model, heads, layers, hidden,
max_len, dropout), so any can be overridden as for the built-ins; ``base`` is the published
base size of each family (GPT-2 124 M, BERT-base 110 M, T5-base 220 M). The ``reference``
variant is transformers' eager attention, written out in matrix products; ``fused`` is its
scaled-dot-product kernel (torch's SDPA); both build the same weights.

Generation (GPT-2 and T5) goes through transformers' own key/value cache: ``DynamicCache``,
and for T5 an ``EncoderDecoderCache`` beside the encoder's output, behind the cache protocol
of ``carbonbench.models.architecture`` (``new_cache``, ``forward(tokens, cache)``,
``cache_length``, ``rewind``). T5's prompt is its source: prefill encodes it and decodes the
start token; decode continues the target.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from carbonbench.models.architecture import Architecture, ArchitectureError
from carbonbench.models.config import TransformerConfig

ATTENTION = {"reference": "eager", "fused": "sdpa"}
SMALL = {
    "tiny": TransformerConfig(vocab=1024, d_model=128, heads=4, layers=2, hidden=512, max_len=256),
    "small": TransformerConfig(
        vocab=8192, d_model=384, heads=6, layers=6, hidden=1536, max_len=512
    ),
}
BASE = {  # the published base configurations
    "gpt2": TransformerConfig(
        vocab=50257, d_model=768, heads=12, layers=12, hidden=3072, max_len=1024
    ),
    "bert": TransformerConfig(
        vocab=30522, d_model=768, heads=12, layers=12, hidden=3072, max_len=512
    ),
    "t5": TransformerConfig(
        vocab=32128, d_model=768, heads=12, layers=12, hidden=3072, max_len=512
    ),
}
INSTALL = "pip install 'carbonbench[hf]'"


def available() -> bool:
    return importlib.util.find_spec("transformers") is not None


class CausalLM(nn.Module):
    """GPT-2 (``GPT2LMHeadModel``): ``forward(tokens[, cache]) -> logits``."""

    def __init__(self, c: TransformerConfig, attention: str) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.net = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=c.vocab,
                n_positions=c.max_len,
                n_embd=c.d_model,
                n_layer=c.layers,
                n_head=c.heads,
                n_inner=c.hidden,
                resid_pdrop=c.dropout,
                embd_pdrop=c.dropout,
                attn_pdrop=c.dropout,
                bos_token_id=0,
                eos_token_id=0,
                attn_implementation=attention,
            )
        )
        self.cache_argument = _cache_argument(self.net)  # once: forward runs per decoded token

    def forward(self, tokens: Tensor, cache: Any = None) -> Tensor:
        """Without a cache, as transformers runs it by default (``use_cache`` on: it keeps the
        keys and values it computes)."""
        given = {} if cache is None else {self.cache_argument: cache}
        return self.net(input_ids=tokens, **given).logits

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache()

    def cache_length(self, cache: Any) -> int:
        return int(cache.get_seq_length())

    def rewind(self, cache: Any, length: int) -> None:
        _crop(cache, length)


class MaskedLM(nn.Module):
    """BERT (``BertForMaskedLM``): ``forward(tokens) -> logits`` at every position."""

    def __init__(self, c: TransformerConfig, attention: str) -> None:
        super().__init__()
        from transformers import BertConfig, BertForMaskedLM

        self.net = BertForMaskedLM(
            BertConfig(
                vocab_size=c.vocab,
                hidden_size=c.d_model,
                num_hidden_layers=c.layers,
                num_attention_heads=c.heads,
                intermediate_size=c.hidden,
                max_position_embeddings=c.max_len,
                hidden_dropout_prob=c.dropout,
                attention_probs_dropout_prob=c.dropout,
                attn_implementation=attention,
            )
        )

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(input_ids=tokens).logits


@dataclass
class Seq2SeqCache:
    """The decoder's key/value cache and the encoder's output it attends to."""

    kv: Any
    memory: Any = None


class Seq2Seq(nn.Module):
    """T5 (``T5ForConditionalGeneration``): ``forward(src, tgt_in) -> logits``, and
    ``forward(tokens, cache)`` for generation (the first call's tokens are the source)."""

    def __init__(self, c: TransformerConfig, attention: str) -> None:
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        self.net = T5ForConditionalGeneration(
            T5Config(
                vocab_size=c.vocab,
                d_model=c.d_model,
                d_kv=c.d_model // c.heads,
                d_ff=c.hidden,
                num_layers=c.layers,
                num_decoder_layers=c.layers,
                num_heads=c.heads,
                dropout_rate=c.dropout,
                decoder_start_token_id=0,
                pad_token_id=0,
                eos_token_id=1,
                attn_implementation=attention,
            )
        )
        self.cache_argument = _cache_argument(self.net)  # once: forward runs per decoded token

    def forward(self, tokens: Tensor, second: Tensor | Seq2SeqCache) -> Tensor:
        if not isinstance(second, Seq2SeqCache):
            return self.net(input_ids=tokens, decoder_input_ids=second).logits
        cache = second
        if cache.memory is None:  # prefill: encode the prompt, decode the start token
            cache.memory = self.net.get_encoder()(input_ids=tokens)
            start = self.net.config.decoder_start_token_id
            tokens = torch.full((tokens.shape[0], 1), start, device=tokens.device)
        out = self.net(
            encoder_outputs=cache.memory,
            decoder_input_ids=tokens,
            use_cache=True,
            **{self.cache_argument: cache.kv},
        )
        return out.logits

    def new_cache(self) -> Seq2SeqCache:
        from transformers import DynamicCache, EncoderDecoderCache

        return Seq2SeqCache(EncoderDecoderCache(DynamicCache(), DynamicCache()))

    def cache_length(self, cache: Seq2SeqCache) -> int:
        return int(cache.kv.get_seq_length())

    def rewind(self, cache: Seq2SeqCache, length: int) -> None:
        _crop(cache.kv, length)  # the encoder's output and the cross-attention stay


def _cache_argument(net: nn.Module) -> str:
    """``cache`` in newer transformers, ``past_key_values`` before."""
    parameters = inspect.signature(type(net).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _crop(cache: Any, length: int) -> None:
    """Drop the cached tokens past ``length`` (a negative count: transformers 4 and 5 alike)."""
    extra = int(cache.get_seq_length()) - length
    if extra > 0:
        cache.crop(-extra)


FAMILIES = {
    "gpt2": ("decoder-only language model (transformers' GPT-2)", "language-model", CausalLM, True),
    "bert": ("masked language model (transformers' BERT)", "masked-lm", MaskedLM, False),
    "t5": ("encoder-decoder (transformers' T5)", "encoder-decoder", Seq2Seq, True),
}


def record(name: str) -> Architecture:
    """The record of ``hf:FAMILY``; one line naming the extra when transformers is missing."""
    family = name.removeprefix("hf:")
    if family not in FAMILIES:
        valid = ", ".join(f"hf:{f}" for f in FAMILIES)
        raise ArchitectureError(f"unknown architecture {name!r}; the Hugging Face ones: {valid}")
    if not available():
        raise ArchitectureError(f"{name} needs transformers: {INSTALL}")
    description, kind, module, generates = FAMILIES[family]

    def builder(attention: str):
        return lambda config: module(config, attention)

    return Architecture(
        name=name,
        description=description,
        kind=kind,
        config_cls=TransformerConfig,
        sizes={**SMALL, "base": BASE[family]},
        builders={impl: builder(attention) for impl, attention in ATTENTION.items()},
        generates=generates,
        source=f"transformers {importlib.metadata.version('transformers')}",
    )
