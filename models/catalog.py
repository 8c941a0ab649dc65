"""The built-in architectures' records and their FLOPs written out by hand.

Torch-free: sizes are configs, FLOPs are arithmetic, and builders name their function
(``"carbonbench.models.gpt:gpt_fused"``), imported when a worker first builds one. So the
supervisor reads a suite and checks its architectures, sizes and phases without torch.
"""

from __future__ import annotations

from collections.abc import Callable

from carbonbench.models.architecture import Architecture
from carbonbench.models.config import GATES, RecurrentConfig, TransformerConfig

# -- FLOPs of one forward pass, 2 per multiply-add (the matrix products only) ----------------


def stack_flops(kind: str, c: RecurrentConfig, tokens: int) -> int:
    """Forward FLOPs of the recurrent layers: per token, per layer, the gates' two matmuls."""
    total = 0
    for layer in range(c.layers):
        inputs = c.d_model if layer == 0 else c.hidden
        total += 2 * GATES[kind] * c.hidden * (inputs + c.hidden)
    return tokens * total


def recurrent_lm_flops(kind: str) -> Callable[[RecurrentConfig, int, int], int]:
    """The recurrent language model of ``kind``: its stack, then the vocabulary projection."""

    def flops(c: RecurrentConfig, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        return stack_flops(kind, c, tokens) + tokens * 2 * c.hidden * c.vocab

    return flops


def seq2seq_flops(c: RecurrentConfig, batch_size: int, seq_len: int) -> int:
    """Encoder and decoder stacks over ``seq_len`` tokens each, the head on the target."""
    tokens = batch_size * seq_len
    return 2 * stack_flops("lstm", c, tokens) + tokens * 2 * c.hidden * c.vocab


def attention_layer_flops(c: TransformerConfig, tokens: int, context: int) -> int:
    """Self-attention and feed-forward of one layer: Q/K/V/output projections, QK^T and AV
    over ``context`` keys (dense: no saving is counted for the causal mask), two FF matmuls."""
    return tokens * (8 * c.d_model**2 + 4 * c.d_model * c.hidden + 4 * context * c.d_model)


def transformer_flops(c: TransformerConfig, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs, source and target both ``seq_len`` long."""
    tokens, d = batch_size * seq_len, c.d_model
    encoder = c.layers * attention_layer_flops(c, tokens, seq_len)
    # decoder: causal self-attention + feed-forward, then cross-attention: Q and output
    # projections on the target, K and V projections on the source, QK^T and AV.
    cross = tokens * 4 * d * d + tokens * 4 * d * d + tokens * 4 * seq_len * d
    decoder = c.layers * (attention_layer_flops(c, tokens, seq_len) + cross)
    return encoder + decoder + tokens * 2 * d * c.vocab


def gpt_flops(c: TransformerConfig, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs: every block over ``seq_len`` keys, then the head."""
    tokens = batch_size * seq_len
    return c.layers * attention_layer_flops(c, tokens, seq_len) + tokens * 2 * c.d_model * c.vocab


# -- the records --------------------------------------------------------------------------


def _language_model(kind: str, description: str, hidden: tuple[int, int, int]) -> Architecture:
    return Architecture(
        name=kind,
        description=description,
        kind="language-model",
        config_cls=RecurrentConfig,
        sizes={
            "tiny": RecurrentConfig(vocab=1024, d_model=128, hidden=hidden[0], layers=2),
            "small": RecurrentConfig(vocab=8192, d_model=512, hidden=hidden[1], layers=2),
            "base": RecurrentConfig(vocab=32000, d_model=1024, hidden=hidden[2], layers=2),
        },
        builders={
            "reference": f"carbonbench.models.recurrent:{kind}_reference",
            "fused": f"carbonbench.models.recurrent:{kind}_fused",
        },
        analytic_flops=recurrent_lm_flops(kind),
    )


ELMAN = _language_model("rnn", "Elman RNN language model (tanh)", (128, 768, 2048))
LSTM = _language_model("lstm", "LSTM language model", (128, 768, 1280))
GRU = _language_model("gru", "GRU language model", (128, 768, 1536))
SEQ2SEQ_LSTM = Architecture(
    name="seq2seq-lstm",
    description="LSTM encoder-decoder (Sutskever et al., 2014)",
    kind="encoder-decoder",
    config_cls=RecurrentConfig,
    sizes={
        "tiny": RecurrentConfig(vocab=1024, d_model=128, hidden=128, layers=2),
        "small": RecurrentConfig(vocab=8192, d_model=384, hidden=512, layers=2),
        "base": RecurrentConfig(vocab=32000, d_model=768, hidden=1024, layers=2),
    },
    builders={
        "reference": "carbonbench.models.recurrent:seq2seq_lstm_reference",
        "fused": "carbonbench.models.recurrent:seq2seq_lstm_fused",
    },
    analytic_flops=seq2seq_flops,
)
TRANSFORMER = Architecture(
    name="transformer",
    description="Transformer encoder-decoder (Vaswani et al., 2017)",
    kind="encoder-decoder",
    config_cls=TransformerConfig,
    sizes={
        "tiny": TransformerConfig(1024, 128, 4, 2, 256, 256),
        "small": TransformerConfig(8192, 384, 6, 3, 1536, 512),
        "base": TransformerConfig(32000, 640, 10, 6, 2560, 1024),
    },
    builders={
        "reference": "carbonbench.models.transformer:transformer_reference",
        "fused": "carbonbench.models.transformer:transformer_fused",
    },
    analytic_flops=transformer_flops,
)
GPT = Architecture(
    name="gpt",
    description="decoder-only Transformer language model (GPT-2 style, pre-norm)",
    kind="language-model",
    config_cls=TransformerConfig,
    sizes={
        "tiny": TransformerConfig(1024, 128, 4, 2, 512, 256),
        "small": TransformerConfig(8192, 384, 6, 6, 1536, 512),
        "base": TransformerConfig(32000, 768, 12, 12, 3072, 1024),
    },
    builders={
        "reference": "carbonbench.models.gpt:gpt_reference",
        "fused": "carbonbench.models.gpt:gpt_fused",
    },
    analytic_flops=gpt_flops,
    generates=True,
)

BUILTIN: tuple[Architecture, ...] = (ELMAN, LSTM, GRU, TRANSFORMER, SEQ2SEQ_LSTM, GPT)
