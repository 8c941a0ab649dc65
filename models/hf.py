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

The records here import neither torch nor transformers (the supervisor validates suites with
them); their builders name the modules of ``carbonbench.models.hf_modules``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from carbonbench.models.architecture import Architecture, ArchitectureError, Kind
from carbonbench.models.config import TransformerConfig

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

# family -> (description, kind, generates)
FAMILIES: dict[str, tuple[str, Kind, bool]] = {
    "gpt2": ("decoder-only language model (transformers' GPT-2)", "language-model", True),
    "bert": ("masked language model (transformers' BERT)", "masked-lm", False),
    "t5": ("encoder-decoder (transformers' T5)", "encoder-decoder", True),
}


def available() -> bool:
    return importlib.util.find_spec("transformers") is not None


def record(name: str) -> Architecture:
    """The record of ``hf:FAMILY``; one line naming the extra when transformers is missing."""
    family = name.removeprefix("hf:")
    if family not in FAMILIES:
        valid = ", ".join(f"hf:{f}" for f in FAMILIES)
        raise ArchitectureError(f"unknown architecture {name!r}; the Hugging Face ones: {valid}")
    if not available():
        raise ArchitectureError(f"{name} needs transformers: {INSTALL}")
    description, kind, generates = FAMILIES[family]
    return Architecture(
        name=name,
        description=description,
        kind=kind,
        config_cls=TransformerConfig,
        sizes={**SMALL, "base": BASE[family]},
        builders={
            "reference": f"carbonbench.models.hf_modules:{family}_reference",
            "fused": f"carbonbench.models.hf_modules:{family}_fused",
        },
        generates=generates,
        source=f"transformers {importlib.metadata.version('transformers')}",
    )
