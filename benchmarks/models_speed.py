"""Tokens per second of the model variants on this machine's CPU.

Two comparisons, each printed as a table:
  1. ``fused`` model against a plain torch.nn model of the same shape (nn.RNN/LSTM/GRU between
     an nn.Embedding and an nn.Linear; nn.Transformer; nn.TransformerEncoder with a causal mask
     and norm_first for GPT). Targets: Transformer >= 1.0x, recurrent models >= 0.95x.
  2. ``reference`` against ``fused`` (how much the readable version costs).

Variants are timed in interleaved rounds (A B A B ...) so that drift in the machine's speed
hits each variant alike; the median round is reported.

    python benchmarks/models_speed.py [--size small] [--batch 8] [--seq-len 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from carbonbench import models


class TorchRecurrentLM(nn.Module):
    def __init__(self, kind: str, c: models.RecurrentConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.vocab, c.d_model)
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = cls(c.d_model, c.hidden, c.layers, batch_first=True)
        self.head = nn.Linear(c.hidden, c.vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.rnn(self.embed(tokens))[0])


class TorchSeq2Seq(nn.Module):
    def __init__(self, c: models.RecurrentConfig) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(c.vocab, c.d_model)
        self.tgt_embed = nn.Embedding(c.vocab, c.d_model)
        self.encoder = nn.LSTM(c.d_model, c.hidden, c.layers, batch_first=True)
        self.decoder = nn.LSTM(c.d_model, c.hidden, c.layers, batch_first=True)
        self.head = nn.Linear(c.hidden, c.vocab)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        _, state = self.encoder(self.src_embed(src))
        return self.head(self.decoder(self.tgt_embed(tgt_in), state)[0])


class TorchTransformer(nn.Module):
    def __init__(self, c: models.TransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.vocab, c.d_model)
        self.core = nn.Transformer(
            c.d_model, c.heads, c.layers, c.layers, c.hidden, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(c.d_model, c.vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        out = self.core(self.embed(src), self.embed(tgt_in), tgt_mask=mask, tgt_is_causal=True)
        return self.head(out)


class TorchGPT(nn.Module):
    def __init__(self, c: models.TransformerConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(c.vocab, c.d_model)
        self.pos = nn.Embedding(c.max_len, c.d_model)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.heads, c.hidden, 0.0, "gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length)
        x = self.tok(tokens) + self.pos(torch.arange(length))
        return self.head(self.ln_f(self.blocks(x, mask=mask, is_causal=True)))


def torch_counterpart(name: str, config) -> nn.Module:
    if name in ("rnn", "lstm", "gru"):
        return TorchRecurrentLM(name, config)
    return {"seq2seq-lstm": TorchSeq2Seq, "transformer": TorchTransformer, "gpt": TorchGPT}[name](
        config
    )


def step_fn(model: nn.Module, inputs: tuple[Tensor, ...], phase: str) -> Callable[[], None]:
    targets = inputs[-1].flatten()
    if phase == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(*inputs)

        return infer
    model.train()

    def train() -> None:
        loss = F.cross_entropy(model(*inputs).flatten(0, 1), targets)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return train


def tokens_per_second(
    contenders: dict[str, Callable[[], None]], tokens: int, steps: int, rounds: int
) -> dict[str, float]:
    for fn in contenders.values():  # warm-up: allocator, kernels' first-call costs
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            seconds[name].append((time.perf_counter() - start) / steps)
    return {name: tokens / statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=models.SIZES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arch", action="append", choices=list(models.ARCHITECTURES))
    parser.add_argument("--phase", action="append", choices=["train", "infer"])
    args = parser.parse_args()
    torch.manual_seed(0)
    console = Console()
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, size {args.size}, "
        f"batch {args.batch}, seq_len {args.seq_len}, median of {args.rounds} rounds"
    )
    against_torch = Table(title="fused vs plain torch.nn (tokens/s)")
    against_fused = Table(title="reference vs fused (tokens/s)")
    for table, a, b in ((against_torch, "torch.nn", "fused"), (against_fused, "fused", "ref")):
        for column in ("arch", "phase", a, b, f"{b} / {a}"):
            table.add_column(column, justify="left" if column in ("arch", "phase") else "right")
    tokens = args.batch * args.seq_len
    for name in args.arch or list(models.ARCHITECTURES):
        variants = {impl: models.build(name, args.size, impl) for impl in models.IMPLS}
        plain = torch_counterpart(name, variants["fused"].config)
        inputs = models.example_batch(variants["fused"], args.batch, args.seq_len)
        for phase in args.phase or ["train", "infer"]:
            contenders = {impl: step_fn(m, inputs, phase) for impl, m in variants.items()}
            contenders["torch.nn"] = step_fn(plain, inputs, phase)
            rate = tokens_per_second(contenders, tokens, args.steps, args.rounds)
            ratio = rate["fused"] / rate["torch.nn"]
            against_torch.add_row(
                name, phase, f"{rate['torch.nn']:,.0f}", f"{rate['fused']:,.0f}", f"{ratio:.2f}x"
            )
            against_fused.add_row(
                name,
                phase,
                f"{rate['fused']:,.0f}",
                f"{rate['reference']:,.0f}",
                f"{rate['reference'] / rate['fused']:.2f}x",
            )
    console.print(against_torch)
    console.print(against_fused)


if __name__ == "__main__":
    main()
