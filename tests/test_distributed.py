"""Distributed training measurement: two gloo processes on this CPU."""

from __future__ import annotations

import pytest

from bench.carbon import resolve
from bench.cli import main
from bench.distributed import DistributedRunner, Topology, launch, topology_from_env, training_only
from bench.meter import Measurement
from bench.runner import RunOptions
from bench.store import Store
from tests.test_runner import fast_suite


def test_two_processes_write_one_row_per_window_with_every_rank(tmp_path) -> None:
    suite = training_only(fast_suite(archs=("gpt", "gru"), phases=("train", "infer")))
    assert [c.phase for c in suite.cases] == ["train", "train"]
    assert sum("phase train only" in s for s in suite.skipped) == 2
    db = tmp_path / "d.sqlite"
    run_id = launch(2, suite, str(db), resolve(intensity=300.0), RunOptions(label="ddp"))
    with Store(db, create=False) as store:
        rows = store.rows(run_id)
        (run,) = store.runs()
    assert run["status"] == "ok" and run["metadata"]["world_size"] == 2
    assert len(rows) == 2 * len(suite.cases)
    for row in rows:
        assert row["status"] == "ok" and row["world_size"] == 2
        assert row["tokens"] == row["steps"] * 2 * 8 * 2  # steps x batch x seq_len x ranks
        ranks = row["extra"]["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1]
        # the host's domains are measured once, by local rank 0, not once per rank
        assert set(ranks[0]["energy_j"]) == {"cpu:modelled", "ram:modelled"}
        assert ranks[1]["energy_j"] == {}
        assert row["energy_by_domain"] == ranks[0]["energy_j"]
        assert row["duration_s"] == max(r["duration_s"] for r in ranks)


def test_merge_prefixes_domains_by_host_across_hosts() -> None:
    runner = object.__new__(DistributedRunner)  # only _merge is exercised
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
