"""Runs in supervised worker processes, in rounds: faults cost one case, signals stop cleanly,
a killed supervisor's run can be resumed, and every statistic is built on rounds.

Faults are the tests' own: architectures in tests/examples/faults.py whose step kills, crashes,
exits or hangs its worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from carbonbench.analysis.summary import summarise
from carbonbench.cli import main
from carbonbench.energy.carbon import resolve
from carbonbench.execution.pool import WorkerPool
from carbonbench.execution.protocol import Ready, Replaced, Starting
from carbonbench.execution.runner import RunOptions, new_run_id
from carbonbench.execution.supervisor import Supervisor, plan_rounds
from carbonbench.results.metrics import round_metrics
from carbonbench.results.store import Store
from carbonbench.suites.suite import parse
from tests.helpers import fast_suite, row

REPO = Path(__file__).resolve().parents[1]


def supervise(suite, tmp_path, worker=None, **options):
    db = tmp_path / "s.sqlite"
    events = []
    supervisor = Supervisor(
        suite,
        db,
        resolve(intensity=100.0),
        RunOptions(**options),
        run_id=new_run_id(),
        on_event=events.append,
        worker=worker,
    )
    outcome = supervisor.run()
    events.append(outcome)
    with Store(db, create=False) as store:
        return outcome.status, store.run(supervisor.run_id), store.rows(supervisor.run_id), events


DYING = [sys.executable, "-m", "tests.examples.dying_worker"]


def _dying(monkeypatch, tmp_path, die_on: str, where: str = "start") -> list[str]:
    monkeypatch.setenv("CARBONBENCH_TEST_STARTS", str(tmp_path / "starts"))
    monkeypatch.setenv("CARBONBENCH_TEST_DIE_ON", die_on)
    monkeypatch.setenv("CARBONBENCH_TEST_DIE_IN", where)
    monkeypatch.chdir(REPO)  # tests.examples importable by the worker
    return DYING


@pytest.mark.parametrize("where", ["load", "start", "idle"])
def test_a_worker_dead_before_measuring_is_replaced_and_costs_nothing(
    tmp_path, monkeypatch, where
) -> None:
    """Round 3 of 3, after two good rounds: its first worker is SIGKILLed as its job arrives
    (or in the idle baseline, which only the first worker of a run measures: so there, round
    1). Or one of the workers started ahead of their rounds dies while loading: whichever
    round it was to serve takes a fresh one."""
    die_on = "2" if where == "start" else "0"
    suite = fast_suite(archs=("gpt", "rnn"), rounds=3)
    worker = _dying(monkeypatch, tmp_path, die_on, where)
    status, run, rows, events = supervise(suite, tmp_path, worker=worker)
    assert status == "ok" and run.status == "ok"
    (replaced,) = [e for e in events if isinstance(e, Replaced)]
    assert "killed by SIGKILL" in replaced.cause
    if where != "load":
        assert replaced.round == int(die_on)
    for case in suite.cases:  # every case measured in every round
        assert {(r.round, r.status) for r in rows if r.case_id == case.case_id} == {
            (n, "ok") for n in range(3)
        }
    assert run.metadata.idle_w  # the replacement measured the idle baseline


def test_two_workers_dead_before_measuring_stop_the_run_with_both_causes(
    tmp_path, monkeypatch
) -> None:
    suite = fast_suite(archs=("rnn",), rounds=2)
    worker = _dying(monkeypatch, tmp_path, "1,2")
    status, run, rows, events = supervise(suite, tmp_path, worker=worker)
    outcome = events[-1]
    assert status == "failed" and run.status == "failed" and not outcome.internal
    assert outcome.error.startswith("two workers of round 1 died before measuring anything")
    assert outcome.error.count("killed by SIGKILL") == 2 and run.metadata.error == outcome.error
    assert {r.round for r in rows} == {0}  # round 0's rows are kept


def test_an_error_inside_carbonbench_is_internal_with_its_traceback_kept(
    tmp_path, monkeypatch, capsys
) -> None:
    _dying(monkeypatch, tmp_path, "")
    monkeypatch.setenv("CARBONBENCH_TEST_BUG", "1")
    suite = fast_suite(archs=("rnn",))
    status, run, rows, events = supervise(suite, tmp_path, worker=DYING)
    outcome = events[-1]
    assert status == "failed" and outcome.internal and "AttributeError" in outcome.error
    assert rows == []  # not a failed case: nothing of the model's went wrong
    (log,) = Path(run.metadata.logs).glob("*.log")  # the worker's log is kept beside the store
    assert log.parent.parent == tmp_path / "logs" and "Traceback" in log.read_text()


def test_a_model_that_raises_is_a_failed_case_with_its_traceback(tmp_path) -> None:
    suite = fast_suite(archs=("tests.examples.faults:RAISES", "rnn"))
    status, _, rows, events = supervise(suite, tmp_path)
    assert status == "failed" and not events[-1].internal and events[-1].error is None
    (failed,) = [r for r in rows if r.status == "failed"]
    assert failed.error == "ValueError: the model's own bug"
    assert "faults.py" in failed.extra["traceback"] and "in forward" in failed.extra["traceback"]
    assert [r.status for r in rows if r.arch == "rnn"] == ["ok", "ok"]


def test_rounds_interleave_cases_in_fresh_workers(tmp_path) -> None:
    suite = fast_suite(archs=("gpt", "rnn"), phases=("train", "infer"), rounds=3)
    status, run, rows, events = supervise(suite, tmp_path)
    assert status == "ok" and run.status == "ok"
    ids = [c.case_id for c in suite.cases]
    order = run.metadata.order
    assert [r for r, _ in order] == [0, 1, 2]
    assert all(sorted(cases) == sorted(ids) for _, cases in order)
    assert len({tuple(cases) for _, cases in order}) > 1  # shuffled differently per round
    for r, cases in order:  # each round visited its cases in its stored order
        written = [row.case_id for row in rows if row.round == r]
        assert list(dict.fromkeys(written)) == cases
    for case_id in ids:  # each case: R rounds of `repeats` windows
        assert sorted((x.round, x.repeat) for x in rows if x.case_id == case_id) == [
            (r, w) for r in range(3) for w in range(2)
        ]
    pids = {event.pid for event in events if isinstance(event, Ready)}
    assert len(pids) == 3 and os.getpid() not in pids  # one fresh process per round
    for summary in summarise(rows):
        assert summary.rounds == 3 and summary.windows == 6
        low, high = summary.j_per_token_ci
        assert low <= summary.j_per_token <= high
    assert run.metadata.sensors and run.metadata.idle_w


def test_windows_reduce_to_one_value_per_round() -> None:
    rows = [
        row("r", repeat, round=0, tokens=10, energy_j=e, duration_s=1.0)
        for repeat, e in enumerate((10.0, 20.0, 90.0))
    ] + [
        row("r", repeat, round=1, tokens=10, energy_j=e, duration_s=2.0)
        for repeat, e in enumerate((40.0, 40.0))
    ]
    values = round_metrics(rows)["gpt/tiny"]
    assert values["energy_per_token"] == [2.0, 4.0]  # medians of 1, 2, 9 and of 4, 4
    assert values["time_per_token"] == [0.1, 0.2]
    (summary,) = summarise(rows)
    assert (summary.rounds, summary.windows) == (2, 5)
    assert summary.j_per_token == 3.0  # the median of the round values, not of the windows
    assert summary.j_per_token_ci == pytest.approx((2.0, 4.0))
    (one,) = summarise(rows[:3])
    assert one.j_per_token == 2.0 and one.j_per_token_ci is None  # one round: no interval


def test_adaptive_rounds_stop_at_max_rounds_or_budget(tmp_path) -> None:
    text = fast_suite(archs=("rnn",)).text.replace(
        "rounds = 1", "rounds = 2\nci_half_width = 1e-9\nmax_rounds = 3"
    )
    status, run, rows, _ = supervise(parse(text, "adaptive.toml"), tmp_path)
    assert status == "ok" and sorted({r.round for r in rows}) == [0, 1, 2]
    assert [r for r, _ in run.metadata.order] == [0, 1, 2]
    text = text.replace("max_rounds = 3", "max_rounds = 9\nbudget_s = 0.0")
    status, run, rows, _ = supervise(parse(text, "budget.toml"), tmp_path / "b")
    assert sorted({r.round for r in rows}) == [0, 1]  # the fixed rounds, then the budget is spent


def test_plan_rounds_is_seeded() -> None:
    ids = [f"c{i}" for i in range(6)]
    assert plan_rounds(ids, range(4), seed=1) == plan_rounds(ids, range(4), seed=1)
    assert plan_rounds(ids, range(4), seed=1) != plan_rounds(ids, range(4), seed=2)


@pytest.mark.parametrize(
    ("fault", "cause"),
    [("KILLED", "killed by SIGKILL"), ("SEGFAULT", "killed by SIGSEGV"), ("EXITS", "status 7")],
)
def test_a_worker_that_dies_fails_only_its_case(tmp_path, fault, cause) -> None:
    faulty = f"tests.examples.faults:{fault}"
    suite = fast_suite(archs=(faulty, "rnn"))
    status, run, rows, _ = supervise(suite, tmp_path)
    assert status == "failed" and run.status == "failed"
    (failed,) = [r for r in rows if r.arch == faulty and r.status == "failed"]
    assert cause in failed.error and "about to fault" in failed.error  # its stderr's last lines
    assert [r.status for r in rows if r.arch == "rnn"] == ["ok", "ok"]  # the suite went on


def test_a_worker_that_hangs_is_killed_and_the_suite_goes_on(tmp_path) -> None:
    suite = fast_suite(archs=("tests.examples.faults:HANGS", "rnn"), timeout=4, grace=1)
    started = time.monotonic()
    status, _, rows, _ = supervise(suite, tmp_path)
    assert status == "failed" and time.monotonic() - started < 60
    (hung,) = [r for r in rows if r.status == "failed"]
    assert hung.error.startswith("hung: no step returned within case_timeout_s + hang_grace_s")
    assert [r.status for r in rows if r.arch == "rnn"] == ["ok", "ok"]


def _start(tmp_path: Path, suite, *extra: str) -> tuple[subprocess.Popen, Path]:
    suite_file, db = tmp_path / "suite.toml", tmp_path / "cli.sqlite"
    suite_file.write_text(suite.text)
    command = [sys.executable, "-m", "carbonbench", "run", "--suite", str(suite_file)]
    proc = subprocess.Popen(
        [*command, "--db", str(db), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, db


def _wait_for_rows(db: Path, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with Store(db, create=False) as store:
                    if sum(store.row_counts().values()) >= count:
                        return
            except Exception:
                pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} rows in {db} after {timeout} s")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_window_and_keeps_the_rows(tmp_path, signum, status) -> None:
    suite = fast_suite(archs=("gpt", "rnn", "gru", "lstm"), rounds=2)
    proc, db = _start(tmp_path, suite)
    _wait_for_rows(db, 1)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == status, out
    assert f"interrupted by {signal.Signals(signum).name}" in out
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run.run_id)
    assert run.status == "interrupted" and run.metadata.stopped_by == signal.Signals(signum).name
    assert rows and all(r.status == "ok" for r in rows)
    assert len(rows) < 2 * 2 * len(suite.cases)  # it stopped early


def test_resume_finishes_a_run_whose_supervisor_was_killed(tmp_path) -> None:
    suite = fast_suite(archs=("gpt", "rnn", "gru"), rounds=2)
    proc, db = _start(tmp_path, suite)
    _wait_for_rows(db, 2)
    proc.kill()  # no handler runs: the run stays marked running; its worker dies with it
    proc.communicate(timeout=30)
    time.sleep(0.5)
    with Store(db, create=False) as store:
        (run,) = store.runs()
        before = len(store.rows(run.run_id))
    assert run.status == "running"
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        assert main(["run", "--resume", "latest", "--db", str(db), "--json"]) == 0
    finally:
        os.chdir(cwd)
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run.run_id)
    assert run.status == "ok" and len(run.metadata.resumed_at) == 1
    assert len(rows) > before
    for case in suite.cases:  # every (round, case) measured once: no window twice
        windows = sorted((r.round, r.repeat) for r in rows if r.case_id == case.case_id)
        assert {w[0] for w in windows} == {0, 1}
        assert len(windows) == len(set(windows))


def test_rounds_option_and_json(tmp_path, capsys) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(fast_suite(archs=("rnn",)).text)
    db = str(tmp_path / "o.sqlite")
    argv = ["run", "--suite", str(suite_file), "--db", db, "--rounds", "2", "--json"]
    assert main(argv) == 0
    (case,) = json.loads(capsys.readouterr().out)["cases"]
    assert case["rounds"] == 2 and case["windows"] == 4 and case["j_per_token_ci"] is not None
    assert main(["run", "--suite", str(suite_file), "--db", db, "--rounds", "0"]) == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err


TIMED = [sys.executable, "-m", "tests.examples.timed_worker"]


def test_workers_load_ahead_of_their_rounds_and_never_while_another_measures(
    tmp_path, monkeypatch
) -> None:
    """The workers of a run's rounds start together and import side by side, before the first
    round measures; no worker is loading while another measures its round, and each round is
    still its own fresh process."""
    times = tmp_path / "times"
    monkeypatch.setenv("CARBONBENCH_TEST_TIMES", str(times))
    monkeypatch.chdir(REPO)
    suite = fast_suite(archs=("gpt", "rnn"), phases=("train", "infer"), rounds=3)
    status, run, rows, events = supervise(suite, tmp_path, worker=TIMED)
    assert status == "ok" and {r.round for r in rows} == {0, 1, 2}
    assert [e.workers for e in events if isinstance(e, Starting)] == [3]  # together, once
    spans: dict[str, dict[int, tuple[float, float]]] = {"load": {}, "job": {}}
    for line in times.read_text().splitlines():
        pid, kind, begun, ended = line.split()
        spans[kind][int(pid)] = (float(begun), float(ended))
    assert len(spans["load"]) == 3 and set(spans["job"]) == set(spans["load"])
    assert {e.pid for e in events if isinstance(e, Ready)} == set(spans["job"])
    for pid, (load_begun, load_ended) in spans["load"].items():
        for other, (job_begun, job_ended) in spans["job"].items():
            assert load_ended <= job_begun or load_begun >= job_ended, (pid, other)
    first_job = min(begun for begun, _ in spans["job"].values())
    assert max(begun for begun, _ in spans["load"].values()) < first_job  # all started ahead
    assert run.metadata.sampler.workers == 3
    # the run waited for the workers' load, once (then each round's worker was ready)
    load = max(e for _, e in spans["load"].values()) - min(b for b, _ in spans["load"].values())
    assert 0 < run.metadata.worker_wait_s <= load + 1.0


def test_workers_started_ahead_and_not_needed_are_ended(tmp_path, monkeypatch) -> None:
    """A run that stops early (here: an internal error in its first round) leaves no worker
    behind, loaded or not."""
    _dying(monkeypatch, tmp_path, "")
    monkeypatch.setenv("CARBONBENCH_TEST_BUG", "1")
    suite = fast_suite(archs=("rnn",), rounds=3)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    status, _, _, events = supervise(suite, tmp_path, worker=DYING)
    assert status == "failed" and events[-1].internal
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_how_many_workers_start_ahead_is_bounded_by_rounds_and_memory(monkeypatch) -> None:
    from carbonbench.execution import pool

    class Memory:
        available = 64 * pool.WORKER_BYTES

    monkeypatch.setattr(pool.psutil, "virtual_memory", lambda: Memory)
    assert WorkerPool.ahead(3) == 3
    assert WorkerPool.ahead(50) == pool.MOST_AHEAD
    Memory.available = 8 * pool.WORKER_BYTES  # a quarter of it: room for 2
    assert WorkerPool.ahead(5) == 2
    Memory.available = 0
    assert WorkerPool.ahead(5) == 1  # one worker at a time, as without a pool
