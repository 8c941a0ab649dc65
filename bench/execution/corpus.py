"""A training corpus read as bytes (byte-level tokens, vocabulary 256), checked without torch
so that the command line can refuse an unusable one before a run begins."""

from __future__ import annotations

from pathlib import Path

from carbonbench.errors import InputError


def read_corpus(path: str | Path) -> bytes:
    """The corpus's bytes; one line naming the problem if it cannot be read or is too short."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read corpus {path}: {error.strerror}") from None
    if len(data) < 2:
        raise InputError(f"corpus {path} is too short to train on ({len(data)} bytes)")
    return data
