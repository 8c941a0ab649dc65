"""Files the commands write (reports, exports, Markdown summaries): checked before any work is
done, so a path that cannot be written costs one line, not a rendered report thrown away."""

from __future__ import annotations

import os
from pathlib import Path

from carbonbench.errors import InputError


def check_writable(path: Path, what: str) -> None:
    """Raise ``InputError`` naming the problem if ``path`` cannot be written as a file."""
    if path.is_dir():
        raise InputError(f"cannot write the {what} to {path}: it is a folder; give a file path")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write the {what} to {path}: {existing} is a file, not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write the {what} to {path}: no permission to write the file")
    if not path.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the {what} to {path}: no permission to write in {existing}")


def write_text(path: Path, text: str, what: str) -> None:
    check_writable(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot write the {what} to {path}: {error.strerror}") from None
