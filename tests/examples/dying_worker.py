"""A worker for the supervisor's tests that dies before measuring anything on chosen starts,
then works as the real one does.

``python -m tests.examples.dying_worker JOB`` counts its starts in the file that
``CARBONBENCH_TEST_STARTS`` names; on the starts listed in ``CARBONBENCH_TEST_DIE_ON``
(0-based, comma-separated) it kills itself with SIGKILL, as the OOM killer would: at start-up,
or with ``CARBONBENCH_TEST_DIE_IN=idle`` once its idle baseline begins.
``CARBONBENCH_TEST_BUG=1`` instead makes carbonbench's own row-making raise (an internal
error, not a case's failure)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from carbonbench.energy.meter import EnergyMeter
from carbonbench.execution.worker import main
from carbonbench.results.recorder import Recorder


def _die(*args: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _bug(*args: object, **kwargs: object) -> None:
    raise AttributeError("'Recorder' object has no attribute 'carbn'")


if __name__ == "__main__":
    starts = Path(os.environ["CARBONBENCH_TEST_STARTS"])
    start = int(starts.read_text()) if starts.exists() else 0
    starts.write_text(str(start + 1))
    die_on = {int(n) for n in os.environ.get("CARBONBENCH_TEST_DIE_ON", "").split(",") if n}
    if start in die_on:
        if os.environ.get("CARBONBENCH_TEST_DIE_IN") == "idle":
            EnergyMeter.idle_baseline = _die  # type: ignore[method-assign]
        else:
            _die()
    if os.environ.get("CARBONBENCH_TEST_BUG"):
        Recorder.measured = _bug  # type: ignore[method-assign]
    main()
