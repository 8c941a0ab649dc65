"""A tiny random-weights Llama with its own byte-level BPE tokenizer, written to a folder that
``transformers serve`` loads: a real engine to test against, with nothing downloaded.

The tokenizer is trained on the docstrings of standard-library modules, text that is present
wherever Python is. The weights are random: the text it generates means nothing, but the
engine does all the work of a real model (prefill, decode, streaming, usage counts).

Smoke test: ``python -m carbonbench.serving.tiny FOLDER``, then the command it prints,
``transformers serve FOLDER`` with continuous batching on the CPU and a cache sized for it
(left to itself, continuous batching on a CPU sizes its cache at 60% of the machine's RAM).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
from pathlib import Path

from carbonbench.errors import InputError

logger = logging.getLogger(__name__)

BOS = "<s>"
EOS = "</s>"
PAD = "<pad>"
# Roles in the prompt, the content, and an end-of-sequence after each message: enough for
# /v1/chat/completions to render messages and ask for the assistant's turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Standard-library modules whose docstrings are the default training text.
TEXT_MODULES = (
    "argparse", "collections", "contextlib", "dataclasses", "functools", "http.client",
    "itertools", "json", "logging", "pathlib", "shlex", "subprocess", "threading", "textwrap",
)  # fmt: skip
INSTALL = "pip install 'carbonbench[serving]'"
SERVE_OPTIONS = (
    "--continuous-batching --cb-num-blocks 64 --cb-max-batch-tokens 512"
    " --device cpu --host 127.0.0.1 --port 8000"
)


def default_text() -> str:
    """Docstrings of a few standard-library modules and their public members."""
    parts: list[str] = []
    for name in TEXT_MODULES:
        module = importlib.import_module(name)
        parts.append(module.__doc__ or "")
        for attribute in sorted(vars(module)):
            if not attribute.startswith("_"):
                parts.append(getattr(getattr(module, attribute), "__doc__", None) or "")
    text = "\n".join(part for part in parts if isinstance(part, str))
    # Under `python -OO` docstrings are gone: byte-level BPE still trains on a short text.
    return text or "The quick brown fox jumps over the lazy dog.\n" * 64


def write_tiny_llama(
    folder: Path, *, text: str | None = None, vocab_size: int = 512, seed: int = 0
) -> Path:
    """Write tokenizer, config, generation config and random weights to ``folder``; returns it.

    The same arguments write the same model: the tokenizer's training is deterministic and
    the weights come from ``seed``.
    """
    try:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import (
            GenerationConfig,
            LlamaConfig,
            LlamaForCausalLM,
            PreTrainedTokenizerFast,
        )
    except ImportError as error:
        raise InputError(f"the tiny serving model needs {error.name}: {INSTALL}") from None
    if vocab_size < 260:
        raise InputError(
            f"vocab_size {vocab_size} is too small: give at least 260 (256 bytes and 3 specials)"
        )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([text if text is not None else default_text()], trainer=trainer)
    bos_id, eos_id, pad_id = (bpe.token_to_id(token) for token in (BOS, EOS, PAD))
    # A plain prompt (/v1/completions) starts with <s> as a chat prompt does: the template
    # writes it, and transformers tokenizes a rendered template without adding another.
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # A zero row gives </s> the logit 0, below the largest of the other random logits for
        # any hidden state (hundreds of random directions in 64 dimensions lie in no common
        # half-space): greedy decoding, the server's default, never ends a reply early, and
        # every request of a load level generates the max_tokens it asked for.
        model.lm_head.weight[eos_id].zero_()
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    model.save_pretrained(folder)
    logger.info("tiny Llama (vocabulary %d) written to %s", config.vocab_size, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carbonbench.serving.tiny",
        description="Write a tiny random-weights Llama for `transformers serve` (no download).",
    )
    parser.add_argument("folder", type=Path, help="where to write the model (created if needed)")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        folder = write_tiny_llama(args.folder, vocab_size=args.vocab_size, seed=args.seed)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"transformers serve {shlex.quote(str(folder))} {SERVE_OPTIONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
