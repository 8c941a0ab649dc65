"""The Hugging Face architectures as modules: transformers' models behind the harness's
forward and cache protocol. The torch side of ``carbonbench.models.hf``, whose records name
the builders below; imported when a worker first builds one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from carbonbench.models.config import TransformerConfig


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


# -- the builders the records of carbonbench.models.hf name (reference: eager attention,
# fused: torch's scaled-dot-product kernel) -------------------------------------------------


def gpt2_reference(c: TransformerConfig) -> CausalLM:
    return CausalLM(c, "eager")


def gpt2_fused(c: TransformerConfig) -> CausalLM:
    return CausalLM(c, "sdpa")


def bert_reference(c: TransformerConfig) -> MaskedLM:
    return MaskedLM(c, "eager")


def bert_fused(c: TransformerConfig) -> MaskedLM:
    return MaskedLM(c, "sdpa")


def t5_reference(c: TransformerConfig) -> Seq2Seq:
    return Seq2Seq(c, "eager")


def t5_fused(c: TransformerConfig) -> Seq2Seq:
    return Seq2Seq(c, "sdpa")
