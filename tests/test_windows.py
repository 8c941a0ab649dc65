"""Measured windows last at least ``min_window_s`` whatever the warm-up did: a workload whose
first step is 50x slower than the others (tests/examples/slow_start.py) must not make the
windows short (sized from a mean that the first step dominates), nor wildly long.

Each step sleeps at least ``STEP_S``, so step counts have exact bounds; wall-clock bounds are
loose, since the 2-core CI machine is shared and its steps may take several times longer."""

from __future__ import annotations

import dataclasses
import math

import pytest

from carbonbench.execution.runner import WINDOW_AIM, CaseRunner, _top_up
from tests.examples.slow_start import FIRST_S, STEP_S
from tests.helpers import fast_suite, run

MIN_WINDOW_S = 0.2
MOST_STEPS = math.ceil(MIN_WINDOW_S / STEP_S) + 1  # steps last >= STEP_S: the floor, + 1
LONGEST_S = 1.5  # a sanity bound for a busy machine; MOST_STEPS is the exact one


def slow_start_suite(warmup_steps: int):
    suite = fast_suite(archs=("tests.examples.slow_start:SLOW_START",), phases=("train",))
    measure = dataclasses.replace(
        suite.measure, warmup_steps=warmup_steps, min_window_s=MIN_WINDOW_S, repeats=3
    )
    return dataclasses.replace(suite, measure=measure)


@pytest.fixture
def spied(monkeypatch):
    """What the runner decided: the fastest warm-up step, and per window (steps it was
    sized to, steps taken)."""
    seen = {"warmup_step_s": [], "windows": []}
    warm_up, window = CaseRunner._warm_up, CaseRunner._window

    def spy_warm_up(self, *args):
        losses, step_s = warm_up(self, *args)
        seen["warmup_step_s"].append(step_s)
        return losses, step_s

    def spy_window(self, workload, steps, *args):
        losses, taken, seconds = window(self, workload, steps, *args)
        seen["windows"].append((steps, taken))
        return losses, taken, seconds

    monkeypatch.setattr(CaseRunner, "_warm_up", spy_warm_up)
    monkeypatch.setattr(CaseRunner, "_window", spy_window)
    return seen


def measured(tmp_path, warmup_steps: int):
    windows = []

    def on_event(event):
        if type(event).__name__ == "Window":
            windows.append(event)

    status, runner, store = run(slow_start_suite(warmup_steps), tmp_path, on_event)
    store.close()
    assert status == "ok"
    rows = [r for r in runner.rows if r.status == "ok"]
    assert len(rows) == 3
    return rows, windows


@pytest.mark.parametrize("warmup_steps", [1, 3])
def test_every_window_lasts_min_window_s(tmp_path, warmup_steps):
    rows, windows = measured(tmp_path, warmup_steps)
    case = rows[0]
    for r in rows:
        assert r.duration_s >= MIN_WINDOW_S, (r.repeat, r.duration_s, r.steps)
        assert r.steps <= MOST_STEPS, (r.repeat, r.duration_s, r.steps)
        assert r.duration_s < LONGEST_S, (r.repeat, r.duration_s, r.steps)
        # the work is that of the steps actually taken
        assert r.tokens == r.steps * case.batch * case.seq_len
        assert r.samples == r.steps * case.batch
    assert [w.steps for w in windows] == [r.steps for r in rows]  # on_window saw them too
    warmup = rows[0].extra["warmup"]
    assert warmup["steps"] == warmup_steps
    assert warmup["duration_s"] >= FIRST_S
    assert warmup["timeline"]
    assert all("warmup" not in r.extra for r in rows[1:])


def test_a_short_window_is_extended_then_the_next_resized(tmp_path, spied):
    """One warm-up step, the slow one: the first window is sized at a single step, ends
    short and is extended; the next is sized from the first's own rate."""
    rows, _ = measured(tmp_path, warmup_steps=1)
    (step_s,) = spied["warmup_step_s"]
    assert step_s >= FIRST_S
    (sized, taken), (resized, _), _ = spied["windows"]
    assert sized == 1 and taken > 1
    assert resized > 1
    assert rows[0].duration_s >= MIN_WINDOW_S


def test_windows_are_sized_from_steady_steps(tmp_path, spied):
    """Three warm-up steps: the first window is sized from the fastest, a steady one (about
    0.8 x 0.2 s / 0.01 s steps on a quiet machine) and is topped up by a few steps; a mean
    over the warm-up ((0.5 + 2 x 0.01) / 3 s a step) would size it at 2."""
    rows, _ = measured(tmp_path, warmup_steps=3)
    (step_s,) = spied["warmup_step_s"]
    assert step_s < FIRST_S / 5  # a steady step, not the first
    sized, taken = spied["windows"][0]
    assert sized == math.ceil(WINDOW_AIM * MIN_WINDOW_S / step_s)
    assert 3 <= sized <= MOST_STEPS
    assert taken <= 1.5 * sized + 1  # the sized steps make most of the window
    assert rows[0].steps == taken


def test_a_top_up_is_sized_from_the_window_own_rate():
    assert _top_up(0.5, 0.5, 10) == 0  # lasted the floor: done
    assert _top_up(0.5, 0.6, 10) == 0
    assert _top_up(0.5, 0.44, 11) == 2  # 0.06 s short at 0.04 s a step
    assert _top_up(0.5, 0.25, 10) == 10  # half way at 10 steps: 10 more
    assert _top_up(0.5, 0.1, 3) == 12  # ceil(0.4 / (0.1 / 3))
    assert _top_up(0.5, 0.0, 0) == 1  # no rate yet: one step
