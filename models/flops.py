"""Floating-point operations per forward pass and per training step.

Counted with ``torch.utils.flop_counter`` (matrix products and attention, 2 FLOPs per
multiply-add; element-wise work is not counted) on a twin of the model: the reference variant
of the same configuration on the meta device, which allocates nothing and computes nothing.
The twin is needed because fused kernels hide their arithmetic from the counter (it sees 0 for
nn.LSTM on CPU, cuDNN RNNs and CPU flash attention), while the arithmetic of the architecture is
the same in both variants. ``analytic_flops`` writes the same count out by hand, as a check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.config import Config, RecurrentConfig, TransformerConfig
from models.recurrent import GATES
from models.registry import ARCHITECTURES, build

METHOD = "torch.utils.flop_counter on the reference variant (meta device)"


@dataclass(frozen=True)
class FlopCount:
    forward: int  # one forward pass over the batch
    train_step: int  # forward + cross-entropy + backward (the optimizer's update is element-wise)
    method: str = METHOD


def count_flops(model: nn.Module, batch_size: int, seq_len: int) -> FlopCount:
    """FLOPs of ``model`` (built by ``models.build``) on a ``batch_size`` x ``seq_len`` batch."""
    config = dataclasses.asdict(model.config)
    with torch.device("meta"):
        twin = build(model.arch, impl="reference", **config)
        count = 2 if ARCHITECTURES[model.arch].encoder_decoder else 1
        inputs = [torch.zeros(batch_size, seq_len, dtype=torch.long) for _ in range(count)]
        with FlopCounterMode(display=False) as forward_counter:
            twin(*inputs)
        with FlopCounterMode(display=False) as train_counter:
            logits = twin(*inputs)
            targets = torch.zeros(batch_size * seq_len, dtype=torch.long)
            F.cross_entropy(logits.flatten(0, 1), targets).backward()
    return FlopCount(forward_counter.get_total_flops(), train_counter.get_total_flops())


def _recurrent_stack(kind: str, c: RecurrentConfig, tokens: int) -> int:
    total = 0
    for layer in range(c.layers):
        inputs = c.d_model if layer == 0 else c.hidden
        total += 2 * GATES[kind] * c.hidden * (inputs + c.hidden)
    return tokens * total


def _attention_layer(c: TransformerConfig, tokens: int, context: int) -> int:
    """Self-attention and feed-forward of one layer: Q/K/V/output projections, QK^T and AV
    over ``context`` keys (dense: no saving is counted for the causal mask), two FF matmuls."""
    return tokens * (8 * c.d_model**2 + 4 * c.d_model * c.hidden + 4 * context * c.d_model)


def analytic_flops(arch: str, config: Config, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs written out by hand (source and target both ``seq_len`` long)."""
    tokens = batch_size * seq_len
    if arch in ("rnn", "lstm", "gru"):
        assert isinstance(config, RecurrentConfig)
        return _recurrent_stack(arch, config, tokens) + tokens * 2 * config.hidden * config.vocab
    if arch == "seq2seq-lstm":
        assert isinstance(config, RecurrentConfig)
        stack = _recurrent_stack("lstm", config, tokens)
        return 2 * stack + tokens * 2 * config.hidden * config.vocab
    assert isinstance(config, TransformerConfig)
    d, layers = config.d_model, config.layers
    head = tokens * 2 * d * config.vocab
    if arch == "gpt":
        return layers * _attention_layer(config, tokens, seq_len) + head
    if arch == "transformer":
        encoder = layers * _attention_layer(config, tokens, seq_len)
        # decoder: causal self-attention + feed-forward, then cross-attention: Q and output
        # projections on the target, K and V projections on the source, QK^T and AV.
        cross = tokens * 4 * d * d + tokens * 4 * d * d + tokens * 4 * seq_len * d
        decoder = layers * (_attention_layer(config, tokens, seq_len) + cross)
        return encoder + decoder + head
    raise ValueError(f"no analytic FLOP count for {arch!r}")


def count_generation_flops(
    model: nn.Module, batch_size: int, prompt_len: int, new_tokens: int
) -> tuple[int, int]:
    """(prefill, decode) FLOPs of greedy generation with the key/value cache: the prompt's
    forward pass, then ``new_tokens`` one-token forward passes over the growing cache."""
    if not hasattr(model, "new_cache"):
        raise ValueError(f"{model.arch} has no key/value cache: generation is for gpt")
    config = dataclasses.asdict(model.config)
    with torch.device("meta"), torch.no_grad():
        twin = build(model.arch, impl="reference", **config)
        cache = twin.new_cache()
        prompt = torch.zeros(batch_size, prompt_len, dtype=torch.long)
        with FlopCounterMode(display=False) as prefill:
            twin(prompt, cache)
        token = torch.zeros(batch_size, 1, dtype=torch.long)
        with FlopCounterMode(display=False) as decode:
            for _ in range(new_tokens):
                twin(token, cache)
    return prefill.get_total_flops(), decode.get_total_flops()
