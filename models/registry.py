"""The architectures the suite compares, their named sizes, and how to build and feed them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models.config import Config, RecurrentConfig, TransformerConfig, field_names
from models.gpt import GPT
from models.recurrent import RecurrentLM, Seq2SeqLSTM
from models.transformer import Transformer

IMPLS = ("reference", "fused")
SIZES = ("tiny", "small", "base")  # < 1 M, 10-20 M and about 100 M parameters


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    config_cls: type[Config]
    sizes: dict[str, Config]
    factory: Callable[[Config, str], nn.Module]
    encoder_decoder: bool = False  # takes (src, tgt_in) rather than tokens


def _recurrent(kind: str, description: str, hidden: tuple[int, int, int]) -> Architecture:
    sizes = {
        "tiny": RecurrentConfig(vocab=1024, d_model=128, hidden=hidden[0], layers=2),
        "small": RecurrentConfig(vocab=8192, d_model=512, hidden=hidden[1], layers=2),
        "base": RecurrentConfig(vocab=32000, d_model=1024, hidden=hidden[2], layers=2),
    }
    return Architecture(
        kind, description, RecurrentConfig, sizes, lambda c, impl: RecurrentLM(kind, c, impl)
    )


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        _recurrent("rnn", "Elman RNN language model (tanh)", (128, 768, 2048)),
        _recurrent("lstm", "LSTM language model", (128, 768, 1280)),
        _recurrent("gru", "GRU language model", (128, 768, 1536)),
        Architecture(
            "transformer",
            "Transformer encoder-decoder (Vaswani et al., 2017)",
            TransformerConfig,
            {
                "tiny": TransformerConfig(1024, 128, 4, 2, 256, 256),
                "small": TransformerConfig(8192, 384, 6, 3, 1536, 512),
                "base": TransformerConfig(32000, 640, 10, 6, 2560, 1024),
            },
            Transformer,
            encoder_decoder=True,
        ),
        Architecture(
            "seq2seq-lstm",
            "LSTM encoder-decoder (Sutskever et al., 2014)",
            RecurrentConfig,
            {
                "tiny": RecurrentConfig(vocab=1024, d_model=128, hidden=128, layers=2),
                "small": RecurrentConfig(vocab=8192, d_model=384, hidden=512, layers=2),
                "base": RecurrentConfig(vocab=32000, d_model=768, hidden=1024, layers=2),
            },
            Seq2SeqLSTM,
            encoder_decoder=True,
        ),
        Architecture(
            "gpt",
            "decoder-only Transformer language model (GPT-2 style, pre-norm)",
            TransformerConfig,
            {
                "tiny": TransformerConfig(1024, 128, 4, 2, 512, 256),
                "small": TransformerConfig(8192, 384, 6, 6, 1536, 512),
                "base": TransformerConfig(32000, 768, 12, 12, 3072, 1024),
            },
            GPT,
        ),
    )
}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; valid: {', '.join(ARCHITECTURES)}"
        ) from None


def make_config(name: str, size: str = "tiny", **overrides: object) -> Config:
    """The named size of an architecture with any config field overridden."""
    arch = architecture(name)
    if size not in arch.sizes:
        raise ValueError(f"unknown size {size!r} for {name}; valid: {', '.join(arch.sizes)}")
    valid = field_names(arch.config_cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown config field(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid)}"
        )
    return dataclasses.replace(arch.sizes[size], **overrides)


def build(name: str, size: str = "tiny", impl: str = "reference", **overrides: object) -> nn.Module:
    """Build architecture ``name`` at ``size`` as the ``reference`` or ``fused`` variant.

    The module is created on torch's current default device (``with torch.device("meta"):``
    builds without allocating) and carries ``arch``, ``config`` and ``impl`` attributes.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
    config = make_config(name, size, **overrides)
    model = ARCHITECTURES[name].factory(config, impl)
    model.arch = name
    return model


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def example_batch(
    name_or_model: str | nn.Module,
    batch_size: int,
    seq_len: int,
    vocab: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Positional inputs for ``model(*inputs)``: uniform random token ids, reproducible by seed.

    Language models get ``(tokens,)``; encoder-decoders get ``(src, tgt_in)``, both ``seq_len``
    long. ``vocab`` defaults to the model's (or, given a name, the tiny size's).
    """
    if isinstance(name_or_model, nn.Module):
        name, vocab = name_or_model.arch, vocab or name_or_model.config.vocab
    else:
        name = name_or_model
        vocab = vocab or architecture(name).sizes["tiny"].vocab
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    count = 2 if ARCHITECTURES[name].encoder_decoder else 1
    tokens = torch.randint(0, vocab, (count, batch_size, seq_len), generator=generator)
    return tuple(t.to(device) for t in tokens) if device is not None else tuple(tokens)
