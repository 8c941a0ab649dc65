"""Architectures that fail the way real jobs do, for the supervisor's tests: a worker killed
(the OOM killer), a segfault, an exit, a step that never returns, a model that raises. Suites
name them as ``tests.examples.faults:KILLED`` and so on; only tests use them.

Each is a tiny language model whose forward pass faults on its ``FAULT_AT``-th call (after its
warm-up and into the first measured window), or, with ``CARBONBENCH_TEST_FAULT_ONCE`` naming
a file, only while that file does not exist yet (the second attempt then succeeds).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from carbonbench.models import Architecture

FAULT_AT = 3  # warm-up (1 step) and at least one measured step always come first


@dataclass(frozen=True)
class TinyConfig:
    vocab: int = 64
    d_model: int = 16


def _fault(kind: str) -> None:
    once = os.environ.get("CARBONBENCH_TEST_FAULT_ONCE")
    if once:
        if Path(once).exists():
            return
        Path(once).touch()
    print(f"about to fault: {kind}", file=sys.stderr, flush=True)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segfault":
        ctypes.string_at(0)
    elif kind == "exit":
        os._exit(7)
    elif kind == "hang":
        threading.Event().wait()
    elif kind == "raise":
        raise ValueError("the model's own bug")


class Faulty(nn.Module):
    def __init__(self, c: TinyConfig, kind: str) -> None:
        super().__init__()
        self.kind, self.calls = kind, 0
        self.embed = nn.Embedding(c.vocab, c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        if not tokens.is_meta:  # the FLOP counter's twin runs on the meta device
            self.calls += 1
            if self.calls == FAULT_AT:
                _fault(self.kind)
        return self.head(self.embed(tokens))


def _record(kind: str) -> Architecture:
    return Architecture(
        name=f"faulty-{kind}",
        description=f"a test model whose step faults ({kind})",
        kind="language-model",
        config_cls=TinyConfig,
        sizes={"tiny": TinyConfig()},
        builders={"fused": lambda c: Faulty(c, kind)},
        source="tests.examples.faults",
    )


KILLED = _record("kill")
SEGFAULT = _record("segfault")
EXITS = _record("exit")
HANGS = _record("hang")
RAISES = _record("raise")
