"""Prometheus metrics of a stored run: ``export --format openmetrics|prometheus`` parsed back
by prometheus_client's own parsers, and ``--pushgateway`` pushing to a real HTTP server on
127.0.0.1 (the test's receiver, speaking the Pushgateway's push API), or to nothing at all."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from carbonbench.cli import main
from carbonbench.results.store import Store
from tests.helpers import begin_run, fast_suite, row

WHY = "the prometheus extra is not installed"
parse_openmetrics = pytest.importorskip(
    "prometheus_client.openmetrics.parser", reason=WHY
).text_string_to_metric_families
parse_text = pytest.importorskip(
    "prometheus_client.parser", reason=WHY
).text_string_to_metric_families

LABEL = 'nightly "7" \\ main\nsecond line'  # every character the format must escape
CPU = {"cpu": "counter", "gpu:0": "power-sampled", "psys": "counter"}
ADDS = {"cpu": True, "gpu:0": True, "psys": False}


def _store(tmp_path: Path) -> Path:
    """Two runs: an old one, and the latest with two cases (two windows each) and a failure."""
    db = tmp_path / "r.sqlite"
    with Store(db) as store:
        begin_run(store, "old-run", metadata={"cpu": "C", "gpus": [], "host": "box"})
        store.add_row(row("old-run", duration_s=1.0, energy_by_domain={"cpu": 1.0}))
        metadata = {"cpu": "C", "gpus": [], "host": "box"}
        begin_run(store, "new-run", label=LABEL, suite_name="nightly", metadata=metadata)
        for repeat, (cpu_j, gpu_j) in enumerate([(10.0, 30.0), (14.0, 26.0)]):
            energy = {"cpu": cpu_j, "gpu:0": gpu_j, "psys": cpu_j + 1}
            common = {
                "method_by_domain": CPU,
                "additive_by_domain": ADDS,
                "energy_by_domain": energy,
            }
            store.add_row(row("new-run", repeat, duration_s=2.0, tokens=64, co2e_g=0.25, **common))
            store.add_row(
                row(
                    "new-run",
                    repeat,
                    case_id="rnn/tiny",
                    arch="rnn",
                    phase="infer",
                    duration_s=0.5,
                    tokens=16,
                    co2e_g=0.01,
                    energy_by_domain={"cpu": 1.5},
                    method_by_domain={"cpu": "modelled"},
                )
            )
        store.add_row(row("new-run", case_id="mlp/tiny", arch="mlp", status="failed", error="x"))
        store.end_run("new-run", "failed", "2026-01-01T01:00:00+00:00")
    return db


def _samples(families, name: str) -> dict[tuple, float]:
    """A family's samples by their labels (sorted pairs)."""
    (family,) = [f for f in families if f.name == name]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def _by(samples: dict[tuple, float], **wanted: str) -> float:
    (value,) = [v for k, v in samples.items() if wanted.items() <= dict(k).items()]
    return value


def test_openmetrics_export_holds_the_latest_runs_per_case_totals(tmp_path, capsys) -> None:
    db = _store(tmp_path)
    assert main(["export", "--db", str(db), "--format", "openmetrics"]) == 0
    text = capsys.readouterr().out
    assert text.endswith("# EOF\n")
    families = list(parse_openmetrics(text))
    types = {f.name: (f.type, f.unit) for f in families}
    assert types == {
        "carbonbench_run": ("info", ""),
        "carbonbench_run_timestamp_seconds": ("gauge", "seconds"),
        "carbonbench_energy_joules": ("counter", "joules"),
        "carbonbench_power_watts": ("gauge", "watts"),
        "carbonbench_duration_seconds": ("counter", "seconds"),
        "carbonbench_tokens": ("counter", ""),
        "carbonbench_co2e_grams": ("counter", "grams"),
    }
    (info,) = next(f for f in families if f.name == "carbonbench_run").samples
    assert info.name == "carbonbench_run_info" and info.value == 1
    assert info.labels == {
        "run": "new-run",
        "suite": "nightly",
        "label": LABEL,  # escaped by the library, read back whole
        "status": "failed",
        "host": "box",
    }
    started = _samples(families, "carbonbench_run_timestamp_seconds")
    assert started == {(("host", "box"), ("run", "new-run")): 1767225600.0}

    energy = _samples(families, "carbonbench_energy_joules")
    assert all(dict(k)["run"] == "new-run" for k in energy)  # the latest run only
    assert {dict(k)["case"] for k in energy} == {"gpt/tiny", "rnn/tiny"}  # no failed case
    gpt = {"case": "gpt/tiny", "arch": "gpt", "phase": "train", "device": "cpu", "host": "box"}
    assert _by(energy, **gpt, domain="cpu", method="counter", additive="true") == 24.0
    assert _by(energy, **gpt, domain="gpu:0", method="power-sampled", additive="true") == 56.0
    assert _by(energy, **gpt, domain="psys", method="counter", additive="false") == 26.0
    assert _by(energy, case="rnn/tiny", domain="cpu", method="modelled", phase="infer") == 3.0
    power = _samples(families, "carbonbench_power_watts")
    assert _by(power, **gpt, domain="gpu:0") == pytest.approx(56.0 / 4.0)
    assert _by(power, case="rnn/tiny", domain="cpu") == pytest.approx(3.0 / 1.0)
    assert _by(_samples(families, "carbonbench_duration_seconds"), **gpt) == 4.0
    assert _by(_samples(families, "carbonbench_tokens"), case="rnn/tiny") == 32
    assert _by(_samples(families, "carbonbench_co2e_grams"), **gpt) == pytest.approx(0.5)
    samples = [s for f in families for s in f.samples]
    assert {s.name for s in samples if s.name.endswith("_total")} == {
        "carbonbench_energy_joules_total",
        "carbonbench_duration_seconds_total",
        "carbonbench_tokens_total",
        "carbonbench_co2e_grams_total",
    }


def test_prometheus_text_for_the_textfile_collector_is_written_whole(tmp_path) -> None:
    db = _store(tmp_path)
    out = tmp_path / "textfile" / "carbonbench.prom"
    command = ["export", "--db", str(db), "--run", "old-run", "--format", "prometheus"]
    assert main([*command, "-o", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["carbonbench.prom"]  # no partial file
    text = out.read_text()
    assert "# EOF" not in text and "# UNIT" not in text  # the classic text format
    families = list(parse_text(text))
    assert {f.type for f in families} == {"gauge", "counter"}  # info is a gauge here
    energy = _samples(families, "carbonbench_energy_joules")
    assert list(energy.values()) == [1.0] and dict(next(iter(energy)))["run"] == "old-run"


def test_openmetrics_export_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    db = _store(tmp_path)
    assert main(["export", "--db", str(db), "--format", "openmetrics", "--run", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    assert main(["export", "--db", str(db), "--format", "openmetrics"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'carbonbench[prometheus]'" in err


class Receiver(BaseHTTPRequestHandler):
    """The test's Pushgateway receiver: takes PUT and POST under /metrics/job/, keeps each
    request's method, path and body, and answers as the Pushgateway does (200)."""

    pushes: list[tuple[str, str, str]]
    status = 200

    def _take(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        ok = self.path.startswith("/metrics/job/")
        self.pushes.append((self.command, self.path, body))
        self.send_response(self.status if ok else 404)
        self.end_headers()

    do_PUT = do_POST = _take

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """(the receiver's URL, the pushes it received), on a free port of 127.0.0.1."""
    pushes: list[tuple[str, str, str]] = []
    handler = type("TestReceiver", (Receiver,), {"pushes": pushes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pushes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _dead_url() -> str:
    """A port of 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _measure(db: Path, gateway: str, status: int = 3) -> list[str]:
    code = f"import sys, time; time.sleep(0.2); sys.exit({status})"
    options = ["--db", str(db), "--pushgateway", gateway, "--label", "job", "--work", "9"]
    return ["measure", *options, "--", sys.executable, "-c", code]


def _grouping(path: str) -> dict[str, str]:
    parts = path.removeprefix("/metrics/").split("/")
    return {unquote(k): unquote(v) for k, v in zip(parts[::2], parts[1::2], strict=True)}


def test_measure_pushes_the_runs_metrics_grouped_by_run_and_host(tmp_path, receiver) -> None:
    url, pushes = receiver
    db = tmp_path / "m.sqlite"
    assert main(_measure(db, url)) == 3  # the command's exit status, pushed or not
    with Store(db, create=False) as store:
        (run,) = store.runs()
        (stored,) = store.rows(run.run_id)
    ((method, path, body),) = pushes
    assert method == "PUT"
    assert _grouping(path) == {"job": "carbonbench", "run": run.run_id, "host": run.metadata.host}
    families = {f.name: f for f in parse_text(body)}
    assert families["carbonbench_run_info"].samples[0].labels["run"] == run.run_id
    energy = {s.labels["domain"]: s for s in families["carbonbench_energy_joules"].samples}
    assert set(energy) == set(stored.energy_by_domain)
    for domain, sample in energy.items():
        assert sample.value == pytest.approx(stored.energy_by_domain[domain])
        assert sample.labels["method"] == stored.method_by_domain[domain]
        assert (
            sample.labels["case"] == stored.case_id and sample.labels["host"] == run.metadata.host
        )
    assert families["carbonbench_tokens"].samples[0].value == 9


def test_a_gateway_that_does_not_answer_is_one_warning_line(tmp_path, capsys) -> None:
    db = tmp_path / "m.sqlite"
    assert main(_measure(db, _dead_url())) == 3  # the command's, unchanged
    warnings = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert len(warnings) == 1 and "did not answer" in warnings[0]
    with Store(db, create=False) as store:
        (run,) = store.runs()
        assert len(store.rows(run.run_id)) == 1  # stored either way


def test_a_gateway_that_refuses_is_one_warning_line(tmp_path, capsys, receiver) -> None:
    url, pushes = receiver
    assert main(_measure(tmp_path / "m.sqlite", url + "/elsewhere", status=0)) == 0
    assert len(pushes) == 1  # answered 404: not a Pushgateway's path
    (warning,) = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert "refused run" in warning and "HTTP 404" in warning


def test_a_bad_gateway_url_is_refused_before_measuring(tmp_path, capsys) -> None:
    db = tmp_path / "m.sqlite"
    assert main(_measure(db, "ftp://host:21")) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    assert not db.exists()


def test_run_pushes_after_the_run_ends(tmp_path, receiver) -> None:
    url, pushes = receiver
    text = fast_suite(archs=("rnn",)).text.replace("idle_baseline_s = 0.1", "idle_baseline_s = 0")
    suite = tmp_path / "one.toml"
    suite.write_text(text)
    db = tmp_path / "r.sqlite"
    argv = ["run", "--suite", str(suite), "--db", str(db), "--json", "--pushgateway", url]
    assert main(argv) == 0
    with Store(db, create=False) as store:
        (run,) = store.runs()
        rows = store.rows(run.run_id)
    ((_, path, body),) = pushes
    assert _grouping(path)["run"] == run.run_id
    families = {f.name: f for f in parse_text(body)}
    assert families["carbonbench_run_info"].samples[0].labels["status"] == "ok"
    (duration,) = families["carbonbench_duration_seconds"].samples
    assert duration.value == pytest.approx(sum(r.duration_s for r in rows if r.ok))
