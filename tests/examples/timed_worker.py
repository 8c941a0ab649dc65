"""A real worker that notes, in the file ``CARBONBENCH_TEST_TIMES`` names, when it loaded and
when it measured (``time.monotonic``, one clock for every process of the machine): for the test
that no worker imports while another measures.

``python -m tests.examples.timed_worker [--phases P,..]``: lines ``PID load|job BEGIN END``."""

from __future__ import annotations

import os
import time

from carbonbench.execution import worker


def _noted(kind: str, fn):
    def noted(*args, **kwargs):
        begun = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            with open(os.environ["CARBONBENCH_TEST_TIMES"], "a") as f:
                f.write(f"{os.getpid()} {kind} {begun} {time.monotonic()}\n")

    return noted


if __name__ == "__main__":
    load = worker._load_then_wait

    def loaded_then_wait(phases, events):  # the load ends where the wait for a job begins
        send = events.send

        def send_noting(event):
            if type(event).__name__ == "Loaded":
                with open(os.environ["CARBONBENCH_TEST_TIMES"], "a") as f:
                    f.write(f"{os.getpid()} load {begun} {time.monotonic()}\n")
            send(event)

        begun = time.monotonic()
        events.send = send_noting
        try:
            return load(phases, events)
        finally:
            events.send = send

    worker._load_then_wait = loaded_then_wait
    worker.run_job = _noted("job", worker.run_job)
    worker.main()
