"""A case's settings applied in the process that measures it, and put back after it.

``threads`` is torch's intra-op thread count: set before the case's model is built, restored
to what the process had after the case, so the next case starts from the machine's default.
(Inter-op threads can be set only once per process, before any parallel work, so they are not a
per-case setting; the worker leaves them at torch's default.) The GPU settings (power limit,
locked SM clock) are changed through ``carbonbench.energy.controls``, which declares each change
to the supervisor before making it, so a worker killed between set and restore is put right.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from carbonbench.suites.case import Case

log = logging.getLogger(__name__)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` (None: left alone) inside the block."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    if count > cores:
        log.warning(
            "threads = %d is more than this machine's %d CPUs: oversubscribed", count, cores
        )
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def applied(case: Case) -> Iterator[None]:
    """Every setting the case gives, in force inside the block and undone after it."""
    with threads(case.threads):
        yield
