"""Distributed training measurement: two gloo processes on this CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from carbonbench.cli import main
from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import Measurement
from carbonbench.execution import distributed
from carbonbench.execution.distributed import (
    DdpCoordinator,
    Topology,
    launch,
    topology_from_env,
    training_only,
)
from carbonbench.execution.runner import JobFailed, RunOptions
from carbonbench.results.store import Store
from tests.helpers import fast_suite


def test_two_processes_write_one_row_per_window_with_every_rank(tmp_path) -> None:
    suite = training_only(fast_suite(archs=("gpt", "gru"), phases=("train", "infer")))
    assert [c.phase for c in suite.cases] == ["train", "train"]
    assert sum("phase train only" in s for s in suite.skipped) == 2
    db = tmp_path / "d.sqlite"
    run_id = launch(2, suite, str(db), resolve(intensity=300.0), RunOptions(label="ddp"))
    with Store(db, create=False) as store:
        rows = store.rows(run_id)
        (run,) = store.runs()
    assert run.status == "ok" and run.metadata.world_size == 2
    assert len(rows) == 2 * len(suite.cases)
    for row in rows:
        assert row.status == "ok" and row.world_size == 2
        assert row.tokens == row.steps * 2 * 8 * 2  # steps x batch x seq_len x ranks
        ranks = row.extra["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1]
        # the host's domains are measured once, by local rank 0, not once per rank
        assert set(ranks[0]["energy_j"]) == {"cpu:modelled", "ram:modelled"}
        assert ranks[1]["energy_j"] == {}
        assert row.energy_by_domain == ranks[0]["energy_j"]
        assert row.duration_s == max(r["duration_s"] for r in ranks)


def test_merge_prefixes_domains_by_host_across_hosts() -> None:
    runner = object.__new__(DdpCoordinator)  # only _merge is exercised
    parts = []
    for rank, host in enumerate(("node-a", "node-a", "node-b")):
        m = Measurement("w", duration_s=1.0 + rank, complete=True)
        m.energy_j = {f"gpu:{rank % 2}": 100.0 + rank}
        m.method = {f"gpu:{rank % 2}": "counter"}
        m.additive = {f"gpu:{rank % 2}": True}
        if rank % 2 == 0:
            m.energy_j["cpu:package-0"] = 50.0
            m.method["cpu:package-0"] = "counter"
            m.additive["cpu:package-0"] = True
        parts.append({"rank": rank, "host": host, "m": m})
    merged = Measurement("w")
    runner._merge(merged, parts)
    assert merged.energy_j == {
        "node-a/gpu:0": 100.0,
        "node-a/cpu:package-0": 50.0,
        "node-a/gpu:1": 101.0,
        "node-b/gpu:0": 102.0,
        "node-b/cpu:package-0": 50.0,
    }
    assert merged.duration_s == 3.0 and merged.total_energy_j == pytest.approx(403.0)


def test_topology_from_torchrun_environment(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert topology_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    topology = topology_from_env()
    assert isinstance(topology, Topology)
    assert (topology.rank, topology.world_size, topology.local_rank) == (3, 4, 1)


def test_cli_nproc(tmp_path, capsys) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(fast_suite(phases=("infer",)).text)
    argv = ["run", "--suite", str(suite_file), "--db", str(tmp_path / "x.sqlite"), "--nproc", "2"]
    assert main(argv) == 2
    assert "no train case to run distributed" in capsys.readouterr().err
    suite_file.write_text(fast_suite(phases=("train",)).text)
    assert main([*argv[:-1], "1"]) == 2
    assert "--nproc must be at least 2" in capsys.readouterr().err


def test_a_timeout_fails_the_case_on_every_rank_together_and_the_run_goes_on(tmp_path) -> None:
    """Ranks decide timeouts together, between windows, so the next case starts aligned."""
    suite = training_only(fast_suite(archs=("gpt", "gru"), timeout=0.001))
    db = tmp_path / "t.sqlite"
    run_id = launch(2, suite, str(db), resolve(intensity=300.0), RunOptions())
    with Store(db, create=False) as store:
        rows = store.rows(run_id)
        (run,) = store.runs()
    assert run.status == "failed"
    assert sorted((r.arch, r.status) for r in rows) == [("gpt", "failed"), ("gru", "failed")]
    assert all("ran past case_timeout_s" in r.error for r in rows)


def _fail_on_rank_1(local_rank: int, nproc: int, port: int, args: tuple) -> None:
    """A spawned rank whose first workload raises on rank 1 only (a fault injected by the
    test, as an out-of-memory error on one GPU would)."""
    if local_rank == 1:
        import carbonbench.execution.runner

        def broken(*a, **k):
            raise RuntimeError("injected on one rank")

        carbonbench.execution.runner.make_workload = broken
    distributed._spawned(local_rank, nproc, port, args)


def test_a_failure_on_one_rank_stops_the_job_at_once_and_is_recorded(tmp_path) -> None:
    """Not a wait for the process group's timeout (here 120 + 120 s): the job stops, with
    the failing rank's error in rank 0's store."""
    suite = training_only(fast_suite(archs=("gpt", "gru"), timeout=120))
    db = tmp_path / "f.sqlite"
    run_id = "20260101T000000Z-failed"
    args = (suite, str(db), resolve(intensity=300.0), RunOptions(), run_id, None)
    started = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 failed, so the job stops"):
        mp.spawn(_fail_on_rank_1, args=(2, _free_port(), args), nprocs=2, join=True)
    assert time.perf_counter() - started < 120
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run_id)
    assert run.status == "failed"
    errors = [r.error for r in rows if r.status == "failed"]
    assert "rank 1: RuntimeError: injected on one rank" in errors
    assert len({r.arch for r in rows}) == 1  # the job stopped: the second case never started


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_launch_turns_a_failed_process_into_one_line(monkeypatch, tmp_path) -> None:
    class Failed:
        def join(self) -> bool:
            raise mp.ProcessRaisedException(
                "\n\n-- Process 1 terminated with the following error:\nTraceback ...\n"
                "carbonbench.execution.protocol.JobFailed: rank 1 failed, so the job stops: boom\n",
                1,
                1234,
            )

    monkeypatch.setattr(mp, "start_processes", lambda *args, **kwargs: Failed())
    suite = training_only(fast_suite())
    with pytest.raises(
        JobFailed, match=r"^run \S+: carbonbench.execution.protocol.JobFailed: rank 1 failed.*boom$"
    ):
        launch(2, suite, str(tmp_path / "x.sqlite"), resolve(intensity=1.0), RunOptions())


def test_gpu_cases_need_one_gpu_per_rank(monkeypatch, tmp_path) -> None:
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a one-GPU host
    suite = training_only(fast_suite(devices=("cuda",)))
    with pytest.raises(ValueError, match="local rank 1 needs its own GPU, but torch sees 1"):
        distributed.run_rank(
            suite, str(tmp_path / "x.sqlite"), resolve(intensity=1.0), RunOptions()
        )


def test_ctrl_c_stops_every_rank_after_its_window_and_keeps_the_rows(tmp_path) -> None:
    """Ctrl-C reaches the launcher and every rank (one process group): the ranks agree to
    stop after the window in progress, the launcher waits for them and prints the summary."""
    suite_file = tmp_path / "s.toml"
    text = fast_suite(archs=("gpt", "gru", "lstm"), timeout=120).text
    text = text.replace("repeats = 2", "repeats = 30")
    suite_file.write_text(text.replace("min_window_s = 0.05", "min_window_s = 0.3"))
    db = tmp_path / "c.sqlite"
    argv = ["run", "--suite", str(suite_file), "--db", str(db), "--nproc", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    deadline = time.monotonic() + 120
    while not _rows(db) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err  # finished, interrupted: not a traceback
    assert "Traceback" not in err and "interrupted" in out
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run.run_id)
    assert run.status == "interrupted"
    first = run.metadata.order[0][1][0] if run.metadata.order else rows[0].case_id
    assert rows and all(r.status == "ok" and r.case_id == first for r in rows)


def _rows(db) -> int:
    if not db.exists():
        return 0
    with contextlib.suppress(Exception), Store(db, create=False) as store:
        return sum(len(store.rows(r.run_id)) for r in store.runs())
    return 0
