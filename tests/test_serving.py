"""``carbonbench serving`` against a real engine: ``transformers serve`` with the tiny
random-weights Llama on 127.0.0.1 (tests/serving.py), levels measured into stored rows that
every reader takes, and the faults of a server: wrong model, nothing listening, a server
elsewhere, a server killed mid-run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from carbonbench.cli import main
from carbonbench.results.store import Store
from carbonbench.suites.phases import SERVE
from tests.serving import free_port, require_serving, serve_command

REPO = Path(__file__).resolve().parents[1]
LOAD = ["--requests", "6", "--max-tokens", "8", "--prompt-tokens", "12", "--idle-baseline", "0"]


def serving(server, db: Path, *extra: str) -> list[str]:
    return ["serving", "--url", server.url, "--model", server.model, "--db", str(db), *extra]


def test_two_concurrency_levels_give_two_ok_rows_with_usage_tokens_and_latencies(
    tiny_server, tmp_path, capsys
):
    db = tmp_path / "s.sqlite"
    argv = serving(tiny_server, db, "--concurrency", "1", "--concurrency", "2", *LOAD, "--json")
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "ok" and len(printed["levels"]) == 2
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run.run_id)
    assert run.metadata.kind == "serving" and run.status == "ok"
    assert run.metadata.extra["serving"]["model"] == tiny_server.model
    assert sorted(r.concurrency for r in rows) == [1, 2]
    for row in rows:
        assert row.ok and row.phase == SERVE and row.arch == tiny_server.model
        assert row.energy_j > 0 and row.duration_s > 0 and row.tokens > 0
        assert set(row.method_by_domain.values()) <= {"counter", "power-sampled", "modelled"}
        extra = row.extra
        assert extra["tokens_source"] == "usage" and extra["requests_ok"] == 6
        assert extra["window"] == "steady" and 0 < extra["steady_s"] <= extra["level_s"]
        assert row.tokens <= extra["output_tokens"] <= 6 * 8
        assert 0 < extra["ttft_p50_s"] <= extra["ttft_p90_s"] <= extra["ttft_p99_s"]
        assert 0 <= extra["itl_p50_s"] <= extra["itl_p90_s"] <= extra["itl_p99_s"]
        assert extra["e2e_p90_s"] >= extra["ttft_p90_s"] * 0.5
        assert extra["level_energy_j"] >= row.energy_j
        assert len(extra["request_log"]) == 6
    # every reader takes the rows: the report's serving section, pareto on a latency axis
    report = tmp_path / "r.html"
    assert main(["report", "--db", str(db), "-o", str(report)]) == 0
    capsys.readouterr()
    html = report.read_text()
    assert "Serving: " in html and "concurrency 2" in html
    assert main(["pareto", "--db", str(db), "--x", "itl_p90_s", "--max-x", "10", "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert group["knobs"] == ["concurrency"] and group["recommended"] is not None


def test_a_wrong_model_is_one_line_naming_the_served_ones_and_nothing_is_stored(
    tiny_server, tmp_path, capsys
):
    db = tmp_path / "s.sqlite"
    argv = ["serving", "--url", tiny_server.url, "--model", "no-such-model", "--db", str(db)]
    assert main([*argv, "--concurrency", "1", *LOAD]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-model" in err and tiny_server.model in err
    assert not db.exists() or not Store(db, create=False).runs()


def test_nothing_listening_and_a_server_elsewhere_are_refused_in_one_line(tmp_path, capsys):
    port = free_port()
    base = ["--model", "m", "--db", str(tmp_path / "s.sqlite"), "--concurrency", "1"]
    assert main(["serving", "--url", f"http://127.0.0.1:{port}", *base]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing answers" in err
    assert main(["serving", "--url", "http://192.0.2.1:8000", *base]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not on this machine" in err


def test_a_server_killed_mid_run_ends_in_one_line_with_earlier_levels_kept(tiny_llama, tmp_path):
    """``--server`` starts the engine; once the first level is stored, the engine is killed:
    the command says so in one line (its exit status and last lines), exits 1, and the level
    measured before stays stored beside the failed one."""
    require_serving()
    port = free_port()
    db = tmp_path / "s.sqlite"
    command = shlex.join(serve_command(tiny_llama, port))
    argv = [
        sys.executable, "-m", "carbonbench", "serving", "--server", command,
        "--url", f"http://127.0.0.1:{port}", "--model", str(tiny_llama), "--db", str(db),
        "--concurrency", "1", "--concurrency", "2", "--rounds", "3",
        "--requests", "12", "--max-tokens", "24", "--idle-baseline", "0", "--warmup", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if db.exists() and _ok_rows(db) >= 1:
                break
            time.sleep(0.2)
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        (server,) = [
            p for p in psutil.Process(child.pid).children(recursive=True) if "serve" in p.cmdline()
        ]
        server.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("carbonbench: error: the server died (killed by signal 9)"), err
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run.run_id)
    assert run.status == "failed"
    assert any(r.ok for r in rows) and rows[-1].status == "failed"
    assert "the server died" in (rows[-1].error or "")


def _ok_rows(db: Path) -> int:
    try:
        with Store(db, create=False, readonly=True) as store:
            return sum(r.ok for r in store.rows())
    except Exception:  # the store being created
        return 0
