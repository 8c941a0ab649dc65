"""The seams between processes and installs: the worker protocol's events and job, and the
JSON `carbonbench run --json` prints for `ab` to read from another install."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from carbonbench.cli import main
from carbonbench.energy.controls import Change
from carbonbench.execution import protocol
from carbonbench.execution.protocol import (
    EVENTS,
    PROTOCOL,
    CaseDone,
    Job,
    ProtocolError,
    RowStored,
    decode,
)
from tests.helpers import fast_suite

CHANGE = Change("cuda:0", 1, "GPU-ab", "NVIDIA H100", "power_limit_w", "mW", 700_000, 300_000)
EXAMPLES = {
    "starting": protocol.Starting(workers=5),
    "loaded": protocol.Loaded(pid=42, seconds=2.7),
    "idle": protocol.Idle(2.0),
    "ready": protocol.Ready(pid=7, metadata={"gpus": []}, idle_w={"cpu:package-0": 3.5}),
    "round": protocol.Round(round=2, index=1, rounds=3, scheduled=12),
    "case": protocol.CaseStarted("gpt/tiny", 2),
    "window": protocol.Window("gpt/tiny", 2, 1, 0.51, 40),
    "row": RowStored("gpt/tiny", 2, 1, "ok", None, 12.5),
    "done": CaseDone("gpt/tiny", 2, True, {"key": [1, 2]}),
    "sampler": protocol.Sampler(reads=50, cpu_s=0.01, interval_s=0.1, interrupted=False),
    "error": protocol.Error("AttributeError: x", "Traceback ..."),
    "replaced": protocol.Replaced(3, "the worker killed by SIGKILL"),
    "stopping": protocol.Stopping("SIGTERM"),
    "device-change": protocol.DeviceChange.of(CHANGE),
    "device-restored": protocol.DeviceRestored.of(CHANGE),
}


def test_every_event_round_trips_as_one_versioned_json_line() -> None:
    assert set(EXAMPLES) == set(EVENTS)  # an example of each kind
    for kind, event in EXAMPLES.items():
        line = event.to_json()
        assert "\n" not in line
        data = json.loads(line)
        assert data["v"] == PROTOCOL and data["event"] == kind
        assert decode(line) == event
    assert decode(EXAMPLES["device-change"].to_json()).change == CHANGE


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        json.dumps({"event": "row"}),  # no version: an older worker
        json.dumps({"v": PROTOCOL + 1, "event": "row"}),
        json.dumps({"v": PROTOCOL, "event": "teleport"}),
        "[1, 2]",
    ],
)
def test_a_line_of_another_protocol_is_refused(line) -> None:
    with pytest.raises(ProtocolError):
        decode(line)


def test_the_job_round_trips_as_one_line_and_names_its_protocol() -> None:
    job = Job("db.sqlite", "run", 1, ["a", "b"], "[suite]", "s.toml", {}, {}, ["cpu"])
    line = job.to_line()
    assert line.endswith("\n") and line.count("\n") == 1  # one line on the worker's input
    assert Job.from_line(line) == job
    stale = dataclasses.asdict(job) | {"v": PROTOCOL - 1}
    with pytest.raises(ProtocolError, match="protocol"):
        Job.from_line(json.dumps(stale))
    with pytest.raises(ProtocolError, match="not a job"):
        Job.from_line("{half")


SCHEMA = json.loads(resources.files("carbonbench.cli").joinpath("run.schema.json").read_text())


def test_run_json_of_the_installed_version_follows_its_schema(tmp_path) -> None:
    """The installed command in its own process, as `ab` runs a base or head install."""
    suite = tmp_path / "suite.toml"
    # windows long enough that the faulty case's first one always reaches its fault, however
    # slow a step is on a loaded machine: the case fails without a measured window
    text = fast_suite(archs=("rnn", "tests.examples.faults:RAISES")).text
    suite.write_text(text.replace("min_window_s = 0.05", "min_window_s = 0.5"))
    command = [sys.executable, "-m", "carbonbench", "run", "--suite", str(suite)]
    command += ["--db", str(tmp_path / "r.sqlite"), "--json", "--rounds", "1"]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    assert result.returncode == 1, result.stderr  # one case failed: exit 1, JSON all the same
    output = json.loads(result.stdout)
    jsonschema.validate(output, SCHEMA)
    assert output["schema"] == 1
    assert {c["status"] for c in output["cases"]} == {"ok", "failed"}


def test_the_schema_accepts_what_earlier_versions_printed() -> None:
    """Before `schema` existed (0.1.0): the same fields, no version."""
    earlier = {"run_id": "20261201T000000Z-abcdef", "status": "ok", "db": "x", "cases": []}
    jsonschema.validate(earlier, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"status": "ok"}, SCHEMA)  # a reader needs the run id


def test_an_internal_error_exits_2_saying_so(tmp_path, monkeypatch, capsys) -> None:
    from carbonbench.execution import supervisor

    monkeypatch.setattr(supervisor, "WORKER", [sys.executable, "-m", "tests.examples.dying_worker"])
    monkeypatch.setenv("CARBONBENCH_TEST_STARTS", str(tmp_path / "starts"))
    monkeypatch.setenv("CARBONBENCH_TEST_BUG", "1")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    suite = tmp_path / "suite.toml"
    suite.write_text(fast_suite(archs=("rnn",)).text)
    code = main(["run", "--suite", str(suite), "--db", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2
    assert "internal error" in err and "AttributeError" in err and "report it" in err


def test_a_given_idle_baseline_must_be_well_formed(tmp_path, monkeypatch, capsys) -> None:
    given = protocol.IdleBaseline({"cpu:modelled": 3.0}, "run x")
    assert protocol.IdleBaseline.from_env(given.to_env()) == given
    monkeypatch.setenv(protocol.IDLE_BASELINE_ENV, "{not json")
    suite = tmp_path / "suite.toml"
    suite.write_text(fast_suite(archs=("rnn",)).text)
    assert main(["run", "--suite", str(suite), "--db", str(tmp_path / "r.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("carbonbench: error: CARBONBENCH_IDLE_BASELINE must be JSON")
    assert "\n" not in err and not (tmp_path / "r.sqlite").exists()
