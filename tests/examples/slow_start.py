"""A tiny language model whose first step is slow, as a GPU's is (cuDNN autotuning, allocator
growth, compilation): its forward pass sleeps ``FIRST_S`` on its first real call and
``STEP_S`` on every later one, so a step's time is known and the first is 50x the others.
Suites name it ``tests.examples.slow_start:SLOW_START``; only tests use it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import Tensor, nn

from carbonbench.models import Architecture

FIRST_S = 0.5
STEP_S = 0.01


@dataclass(frozen=True)
class SlowStartConfig:
    vocab: int = 64
    d_model: int = 16


class SlowStart(nn.Module):
    def __init__(self, c: SlowStartConfig) -> None:
        super().__init__()
        self.calls = 0
        self.embed = nn.Embedding(c.vocab, c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        if not tokens.is_meta:  # the FLOP counter's twin runs on the meta device
            self.calls += 1
            time.sleep(FIRST_S if self.calls == 1 else STEP_S)
        return self.head(self.embed(tokens))


SLOW_START = Architecture(
    name="slow-start",
    description="a test model whose first step is 50x slower than the others",
    kind="language-model",
    config_cls=SlowStartConfig,
    sizes={"tiny": SlowStartConfig()},
    builders={"fused": SlowStart},
    source="tests.examples.slow_start",
)
