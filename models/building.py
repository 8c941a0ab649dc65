"""Building and feeding the modules: the torch side of the registry.

Apart from ``carbonbench.models.registry`` so that naming and checking architectures (what
the supervisor does) imports no torch; a worker, or any user's code, imports this on first
use of ``carbonbench.models.build`` and the other names here.
"""

from __future__ import annotations

import torch
from torch import nn

from carbonbench.models.architecture import ArchitectureError
from carbonbench.models.registry import architecture, make_config


def build(name: str, size: str = "tiny", impl: str = "reference", **overrides: object) -> nn.Module:
    """Build architecture ``name`` at ``size`` as the ``reference`` or ``fused`` variant.

    The module is created on torch's current default device (``with torch.device("meta"):``
    builds without allocating) and carries ``arch``, ``config`` and ``impl`` attributes.
    """
    arch = architecture(name)
    builder = arch.builder(impl)
    config = make_config(name, size, **overrides)
    model = builder(config)
    model.arch, model.config, model.impl = name, config, impl
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
        arch = architecture(name_or_model.arch)
        vocab = vocab or name_or_model.config.vocab
    else:
        arch = architecture(name_or_model)
        vocab = vocab or arch.sizes["tiny"].vocab
    if batch_size <= 0 or seq_len <= 0:
        raise ArchitectureError(
            f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}"
        )
    generator = torch.Generator().manual_seed(seed)
    count = 2 if arch.encoder_decoder else 1
    tokens = torch.randint(0, vocab, (count, batch_size, seq_len), generator=generator)
    batch = tuple(tokens)
    return tuple(t.to(device) for t in batch) if device is not None else batch
