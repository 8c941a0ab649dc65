"""Prompts for a serving level: synthetic text of about a requested length, reproducible.

A prompt of about L tokens is L words: a run of consecutive words from a corpus file starting
at a random word, or L words drawn from a built-in list of common short English words, most of
which are one token for the BPE tokenizers of today's models (with their leading space). The
length is only approximate: the server's tokenizer decides the real count, and the count that
gets stored is the server's ``usage``. Each prompt starts at its own random place, so a
server's prefix cache shares no work between them.

Lengths (of prompts, and of the answers asked for with ``max_tokens``) are a ``LengthSpec``:
``N`` (always N), ``uniform:LOW-HIGH`` (integers, both ends included) or ``normal:MEAN,STD``
(rounded, clipped to at least 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from carbonbench.errors import InputError

FORMS = "N, uniform:LOW-HIGH or normal:MEAN,STD (positive integers, LOW <= HIGH)"

_WORD_TEXT = """
    the of and to in is that for it as was with be by on not he this are or his from at which
    but have an they you were her she there one all we their has been if more when will would
    who so no out up into do any your what can some time only new may could other than then
    these its two first also after over most where how made many such our way even because
    well just back year work day good long make much see through people world still life own
    place last great small hand high old part take under end may state left home light water
    house name while side country off never right might point sound line open read show near
    small city tree cross farm hard start story saw far sea draw late run keep eye plant cover
    food sun four between hold answer stand learn fire town late air page earth head ground
    large spell add land music page change move kind need try turn cause help low game set put
    form real week stop book river carry rock field rain north wind south mind color face
"""
WORDS = tuple(dict.fromkeys(_WORD_TEXT.split()))


@dataclass(frozen=True)
class LengthSpec:
    """A length, or a distribution of lengths, in tokens."""

    kind: Literal["fixed", "uniform", "normal"]
    a: float  # fixed: the length; uniform: low; normal: mean
    b: float = 0.0  # uniform: high; normal: standard deviation

    @classmethod
    def parse(cls, text: str) -> LengthSpec:
        spec = text.strip().lower()
        if match := re.fullmatch(r"\d+", spec):
            value = int(match.group())
            if value >= 1:
                return cls("fixed", value)
        elif match := re.fullmatch(r"uniform:(\d+)\s*-\s*(\d+)", spec):
            low, high = int(match.group(1)), int(match.group(2))
            if 1 <= low <= high:
                return cls("uniform", low, high)
        elif match := re.fullmatch(r"normal:(\d+(?:\.\d*)?)\s*,\s*(\d+(?:\.\d*)?)", spec):
            mean, std = float(match.group(1)), float(match.group(2))
            if mean >= 1:
                return cls("normal", mean, std)
        raise InputError(f"bad length {text!r}: give {FORMS}")

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        """n lengths, each at least 1."""
        if self.kind == "fixed":
            return [int(self.a)] * n
        if self.kind == "uniform":
            return [int(x) for x in rng.integers(int(self.a), int(self.b) + 1, size=n)]
        drawn = np.rint(rng.normal(self.a, self.b, size=n))
        return [int(x) for x in np.maximum(drawn, 1)]

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        if self.kind == "uniform":
            return f"uniform:{int(self.a)}-{int(self.b)}"
        return f"normal:{self.a:g},{self.b:g}"


@dataclass(frozen=True)
class Prompt:
    text: str
    approx_tokens: int  # words: the server's tokenizer decides the real count
    max_tokens: int


def corpus_words(path: str | Path) -> list[str]:
    """The words of a text file (split on whitespace)."""
    path = Path(path)
    try:
        words = path.read_text(encoding="utf-8", errors="replace").split()
    except OSError as error:
        raise InputError(f"cannot read prompt corpus {path}: {error.strerror}") from None
    if not words:
        raise InputError(f"prompt corpus {path} has no words: give a text file")
    return words


def make_prompts(
    n: int,
    prompt_tokens: LengthSpec,
    max_tokens: LengthSpec,
    corpus: Path | None = None,
    seed: int = 0,
) -> list[Prompt]:
    """n prompts, the same ones for the same arguments."""
    if n < 1:
        raise InputError(f"cannot make {n} prompts: give at least 1 request")
    rng = np.random.default_rng(seed)
    lengths = prompt_tokens.sample(rng, n)
    answers = max_tokens.sample(rng, n)
    words = corpus_words(corpus) if corpus is not None else None
    prompts = []
    for length, answer in zip(lengths, answers, strict=True):
        if words is None:
            text = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=length))
        else:
            start = int(rng.integers(0, len(words)))
            text = " ".join(words[(start + i) % len(words)] for i in range(length))
        prompts.append(Prompt(text=text, approx_tokens=length, max_tokens=answer))
    return prompts
