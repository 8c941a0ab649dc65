"""A worker for the supervisor's tests that dies before measuring anything on chosen starts,
then works as the real one does.

``python -m tests.examples.dying_worker [--phases P,..]`` counts, in the file that
``CARBONBENCH_TEST_STARTS`` names, either its process starts (``CARBONBENCH_TEST_DIE_IN=load``:
it dies before loading, as a worker started ahead of its round may) or the jobs handed to
workers (``start``: it dies on receiving its job; ``idle``: once its idle baseline begins).
On the counts listed in ``CARBONBENCH_TEST_DIE_ON`` (0-based, comma-separated) it kills itself
with SIGKILL, as the OOM killer would. Jobs are handed one at a time, so their count says which
round a death hits; workers load side by side, so a load's count says only how many died.
``CARBONBENCH_TEST_BUG=1`` instead makes carbonbench's own row-making raise (an internal
error, not a case's failure)."""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

from carbonbench.energy.meter import EnergyMeter
from carbonbench.execution import worker
from carbonbench.results.recorder import Recorder


def _die(*args: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _bug(*args: object, **kwargs: object) -> None:
    raise AttributeError("'Recorder' object has no attribute 'carbn'")


def _count() -> int:
    """This start's (or job's) number, counted under a lock: workers start side by side."""
    path = Path(os.environ["CARBONBENCH_TEST_STARTS"])
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        count = int(f.read() or 0)
        f.seek(0)
        f.truncate()
        f.write(str(count + 1))
    return count


def _dies() -> bool:
    die_on = {int(n) for n in os.environ.get("CARBONBENCH_TEST_DIE_ON", "").split(",") if n}
    return _count() in die_on


if __name__ == "__main__":
    where = os.environ.get("CARBONBENCH_TEST_DIE_IN", "start")
    if where == "load" and _dies():
        _die()
    if where in ("start", "idle"):
        run_job = worker.run_job

        def counted(job, events):
            if _dies():
                if where == "idle":
                    EnergyMeter.idle_baseline = _die  # type: ignore[method-assign]
                else:
                    _die()
            return run_job(job, events)

        worker.run_job = counted
    if os.environ.get("CARBONBENCH_TEST_BUG"):
        Recorder.measured = _bug  # type: ignore[method-assign]
    worker.main()
