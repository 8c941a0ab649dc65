"""The ``carbonbench`` logger's one setup: a handler on standard error and a level.

The level comes from the command line (``-v`` INFO, ``-vv`` DEBUG) or else from the environment
variable ``CARBONBENCH_LOG``, a level name (debug, info, warning, error, critical; any case);
by default WARNING. A level given by flag is exported in ``CARBONBENCH_LOG``, so the worker
processes a run starts (which call ``configure(0)``) log at the level their supervisor does.
Modules log through ``logging.getLogger(__name__)``; the library never configures logging
unless this is called, so a program that embeds carbonbench keeps its own setup.
"""

from __future__ import annotations

import logging
import os
import sys

from carbonbench.errors import InputError

ENV = "CARBONBENCH_LOG"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record (tests and callers replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def level(verbosity: int) -> int:
    """The level asked for: by ``-v`` count if given, else by ``CARBONBENCH_LOG``, else
    WARNING. An unknown name is refused rather than silently logging less than asked."""
    if verbosity > 0:
        return logging.INFO if verbosity == 1 else logging.DEBUG
    name = os.environ.get(ENV, "").strip().lower()
    if not name:
        return logging.WARNING
    if name not in LEVELS:
        raise InputError(
            f"{ENV}={os.environ[ENV]!r} is not a log level: give one of {', '.join(LEVELS)}"
        )
    return LEVELS[name]


def configure(verbosity: int) -> None:
    """Set up the ``carbonbench`` logger (again: each call replaces the previous setup)."""
    resolved = level(verbosity)
    if verbosity > 0:
        os.environ[ENV] = logging.getLevelName(resolved).lower()
    logger = logging.getLogger("carbonbench")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(resolved)
