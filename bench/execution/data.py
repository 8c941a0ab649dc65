"""Training and evaluation data with no download.

- ``MarkovSource``: a seeded first-order Markov chain over the vocabulary. Token i may be
  followed by i + o (mod vocab) for ``branching`` distinct offsets o (one of them 1, which makes
  the chain irreducible), with log-normal random probabilities per token. Its entropy rate
  H = sum_i pi_i H(P_i), with pi the stationary distribution, is the lowest cross-entropy any
  model can reach (nats/token), so training progress can be judged against a known optimum.
- ``ReversalTask``: translation for the encoder-decoders: the target is the source reversed.
  Token 0 is reserved as the target's start symbol; deterministic, so the best loss is 0.
- ``CorpusSource``: a user's text file as byte-level tokens (vocabulary 256).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from carbonbench.errors import InputError
from carbonbench.execution.corpus import read_corpus

BOS = 0


@dataclass
class Batch:
    inputs: tuple[Tensor, ...]  # positional inputs of model(*inputs)
    targets: Tensor  # [batch, target_len] token ids to predict


@functools.lru_cache(maxsize=16)
def _chain(vocab: int, seed: int, branching: int, spread: float) -> tuple[Tensor, ...]:
    """The chain of a seed: (successors, transition probabilities, their cumulative sums, the
    stationary law, the entropy rate). Cases of one worker share a vocabulary and seed, so the
    stationary law (thousands of iterations: about 0.1 s) is found once per worker, not once
    per case; the tensors are only read."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.cat(
        [
            torch.ones(1, dtype=torch.long),
            2 + torch.randperm(vocab - 2, generator=g)[: branching - 1],
        ]
    )
    successors = (torch.arange(vocab)[:, None] + offsets[None, :]).remainder(vocab)
    weights = torch.exp(spread * torch.randn(vocab, branching, generator=g))
    probs = weights / weights.sum(1, keepdim=True)
    stationary = _stationary(successors, probs)
    entropy = (stationary * -(probs.double() * probs.double().log()).sum(1)).sum()
    return successors, probs, probs.cumsum(1), stationary, entropy


def _stationary(
    successors: Tensor, probs: Tensor, iterations: int = 2000, tolerance: float = 1e-12
) -> Tensor:
    vocab = successors.shape[0]
    pi = torch.full((vocab,), 1.0 / vocab, dtype=torch.float64)
    flow = probs.double()
    for _ in range(iterations):
        nxt = torch.zeros_like(pi).index_add_(
            0, successors.flatten(), (pi[:, None] * flow).flatten()
        )
        nxt = 0.5 * (pi + nxt)  # lazy chain: same stationary law, no periodicity trouble
        if float((nxt - pi).abs().sum()) < tolerance:
            return nxt / nxt.sum()
        pi = nxt
    return pi / pi.sum()


class MarkovSource:
    def __init__(self, vocab: int, seed: int = 0, branching: int = 8, spread: float = 1.5):
        if vocab < 2:
            raise InputError(f"a Markov source needs a vocabulary of at least 2, got {vocab}")
        self.vocab = vocab
        branching = min(branching, vocab - 1)
        chain = _chain(vocab, seed, branching, spread)
        self.successors, self.probs, self._cumulative, self.stationary, entropy = chain
        self.entropy_rate = float(entropy)
        self._generator = torch.Generator().manual_seed(seed + 1)

    def sample(self, batch: int, length: int) -> Tensor:
        """``[batch, length]`` token ids, starting from the stationary distribution."""
        tokens = torch.empty(batch, length, dtype=torch.long)
        current = torch.multinomial(self.stationary.float(), batch, True, generator=self._generator)
        tokens[:, 0] = current
        uniforms = torch.rand(length, batch, 1, generator=self._generator)
        for t in range(1, length):
            choice = torch.searchsorted(self._cumulative[current], uniforms[t])
            choice = choice.clamp_max(self.successors.shape[1] - 1)
            current = self.successors[current, choice[:, 0]]
            tokens[:, t] = current
        return tokens

    def lm_batch(self, batch: int, seq_len: int) -> Batch:
        tokens = self.sample(batch, seq_len + 1)
        return Batch((tokens[:, :-1],), tokens[:, 1:])


class CorpusSource:
    """Byte-level tokens from a local file; batches are random windows of it."""

    vocab = 256
    entropy_rate = None  # unknown for real text

    def __init__(self, path: str | Path, seed: int = 0) -> None:
        path = Path(path)
        data = read_corpus(path)
        self.path = path
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self._generator = torch.Generator().manual_seed(seed)

    def sample(self, batch: int, length: int) -> Tensor:
        if length > len(self.data):
            raise InputError(
                f"corpus {self.path} has {len(self.data)} bytes, fewer than one sequence of "
                f"{length}: use a longer file or a shorter seq_len"
            )
        starts = torch.randint(0, len(self.data) - length + 1, (batch,), generator=self._generator)
        return torch.stack([self.data[s : s + length] for s in starts.tolist()])

    def lm_batch(self, batch: int, seq_len: int) -> Batch:
        tokens = self.sample(batch, seq_len + 1)
        return Batch((tokens[:, :-1],), tokens[:, 1:])


class ReversalTask:
    """src -> reversed src. tgt_in is the target shifted right behind BOS (teacher forcing)."""

    entropy_rate = 0.0

    def __init__(self, source: MarkovSource | CorpusSource) -> None:
        self.source = source
        self.vocab = source.vocab

    def batch(self, batch: int, seq_len: int) -> Batch:
        src = self.source.sample(batch, seq_len)
        tgt = src.flip(1)
        tgt_in = torch.cat([torch.full((batch, 1), BOS, dtype=torch.long), tgt[:, :-1]], 1)
        return Batch((src, tgt_in), tgt)


class MaskingTask:
    """Masked language modelling (BERT's objective): ``rate`` of the positions replaced by
    ``mask_id``; the targets are the original tokens there and -100 (ignored) elsewhere.
    At least one position of each sequence is masked."""

    entropy_rate = None  # not the source's next-token rate: no target from it

    def __init__(self, source: MarkovSource | CorpusSource, mask_id: int, rate: float = 0.15):
        self.source, self.mask_id, self.rate = source, mask_id, rate
        self.vocab = source.vocab + 1
        self.generator = torch.Generator().manual_seed(getattr(source, "seed", 0) + 1)

    def batch(self, batch: int, seq_len: int) -> Batch:
        tokens = self.source.sample(batch, seq_len)
        masked = torch.rand(batch, seq_len, generator=self.generator) < self.rate
        one = torch.randint(0, seq_len, (batch,), generator=self.generator)
        masked[torch.arange(batch), one] = True
        inputs = tokens.masked_fill(masked, self.mask_id)
        targets = tokens.masked_fill(~masked, -100)
        return Batch((inputs,), targets)


def target_loss(entropy_rate: float | None, factor: float, absolute: float | None) -> float:
    """The loss training-to-target stops at: ``absolute`` if given, else within ``factor`` of
    the source's entropy rate."""
    if absolute is not None:
        return absolute
    if entropy_rate is None or entropy_rate <= 0:
        raise InputError(
            "this data has no known entropy rate: give the target loss itself ([target].loss "
            "in the suite)"
        )
    return entropy_rate * factor


def uniform_loss(vocab: int) -> float:
    """The loss of a model that knows nothing: ln(vocab)."""
    return math.log(vocab)
