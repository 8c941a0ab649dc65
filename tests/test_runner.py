"""The runner end to end on this CPU: rows, failures, interruption, energy to target."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest
import torch

import carbonbench.execution.runner as runner_module
from carbonbench.analysis.summary import summarise
from carbonbench.cli import main
from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import ModelledCpuSensor, ModelledRamSensor
from carbonbench.execution import workloads
from carbonbench.execution.protocol import RowStored
from carbonbench.execution.runner import Runner, RunOptions
from carbonbench.execution.workloads import make_workload
from carbonbench.models import build
from carbonbench.results.metadata import Process
from carbonbench.results.store import Store
from carbonbench.suites.suite import narrow
from tests.helpers import fast_suite, run


def test_every_case_becomes_rows_with_work_energy_and_carbon(tmp_path) -> None:
    suite = fast_suite(archs=("gpt", "seq2seq-lstm"), phases=("train", "infer", "generate"))
    status, runner, store = run(suite, tmp_path)
    assert status == "ok"
    rows = store.rows(runner.run_id)
    assert {r.case_id for r in rows} == {c.case_id for c in suite.cases}
    assert len(rows) == 2 * len(suite.cases)
    for row in rows:
        assert row.status == "ok" and row.steps >= 1 and row.energy_j > 0
        assert row.flops > 0 and row.duration_s > 0
        assert row.method_by_domain == {"cpu:modelled": "modelled", "ram:modelled": "modelled"}
        assert row.co2e_g == pytest.approx(row.kwh * 400.0)
        assert row.kwh == pytest.approx(row.energy_j / 3.6e6)
        assert row.idle_w is not None and row.dynamic_energy_j is not None
        per_step = {"decode": 2 * 4, "prefill": 2 * 8}.get(row.phase, 2 * 8)
        assert row.tokens == row.steps * per_step
        if row.arch == "seq2seq-lstm":
            assert row.src_tokens == row.tokens
        if row.repeat == 0:
            assert row.extra["warmup"]["steps"] == 1
    train = next(r for r in rows if r.phase == "train")
    assert train.loss is not None and train.params > 0
    (meta,) = [r for r in store.runs() if r.run_id == runner.run_id]
    assert meta.status == "ok" and meta.suite_name == "fast"
    m = meta.metadata
    assert m.host and m.cpu and m.versions and m.sensors and m.carbon and m.idle_w
    assert m.kind == "suite" and m.process is not None
    summary = summarise(runner.rows)
    assert all(s.status == "ok" and s.j_per_token > 0 for s in summary)
    # the same numbers from the rows as stored (what the report and `run --json` read)
    stored = summarise(store.rows(runner.run_id))
    for live, again in zip(summary, stored, strict=True):
        assert live.j_per_token == pytest.approx(again.j_per_token)
        assert live.j_per_token_ci == pytest.approx(again.j_per_token_ci)
        assert live.methods == again.methods == ["modelled"]
        assert (live.rounds, live.windows) == (1, 2)
        assert live.j_per_token_ci is None  # one round (one process): no interval to claim


def test_a_failing_case_is_recorded_and_the_suite_goes_on(tmp_path) -> None:
    suite = fast_suite(archs=("gru",), devices=("cuda", "cpu"))
    status, runner, store = run(suite, tmp_path)
    assert status == "failed"
    rows = store.rows(runner.run_id)
    failed = [r for r in rows if r.status == "failed"]
    assert len(failed) == 1 and "torch sees no CUDA GPU" in failed[0].error
    assert [r.status for r in rows if r.device == "cpu"] == ["ok", "ok"]


def test_nan_loss_fails_the_case(tmp_path, monkeypatch) -> None:
    def diverging(*args, **kwargs):
        workload = make_workload(*args, **kwargs)
        workload.step = lambda: torch.tensor(float("nan"))
        return workload

    monkeypatch.setattr(runner_module, "make_workload", diverging)
    status, runner, store = run(fast_suite(), tmp_path)
    (row,) = store.rows(runner.run_id)
    assert status == "failed" and row.status == "failed"
    assert row.error == "loss became NaN or infinite: training diverged"


def test_case_timeout(tmp_path) -> None:
    _, runner, store = run(fast_suite(timeout=0.0), tmp_path)
    (row,) = store.rows(runner.run_id)
    assert row.status == "failed" and "timed out" in row.error


def test_ctrl_c_stops_after_the_window_and_keeps_rows(tmp_path) -> None:
    def on_event(event):
        if isinstance(event, RowStored) and event.repeat == 0:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled by the runner

    suite = fast_suite(archs=("rnn", "gru"))
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where pytest runs in the background
    status, runner, store = run(suite, tmp_path, on_event)
    assert status == "interrupted"
    rows = store.rows(runner.run_id)
    assert len(rows) == 1 and rows[0].status == "ok"
    assert store.runs()[-1].status == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler, restored


def test_resume_adds_the_cases_a_stopped_run_has_no_rows_for(tmp_path, capsys) -> None:
    def on_event(event):
        if isinstance(event, RowStored) and event.repeat == 0:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the first window

    suite = fast_suite(archs=("rnn", "gru", "gpt"))
    store = Store(tmp_path / "r.sqlite")
    with EnergyMeter([ModelledCpuSensor(), ModelledRamSensor()], 0.02) as meter:
        carbon = resolve(intensity=123.0)
        options = RunOptions(label="night", cpu_tdp_w=42.0, filters={"arch": ["rnn", "gru"]})
        runner = Runner(narrow(suite, arch=["rnn", "gru"]), store, meter, carbon, options, on_event)
        assert runner.run() == "interrupted"
    store.close()
    db = str(tmp_path / "r.sqlite")
    assert main(["run", "--resume", "latest", "--arch", "gpt", "--db", db]) == 2
    assert "--resume measures as the run did: drop --arch" in capsys.readouterr().err
    assert main(["run", "--resume", "latest", "--db", db, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_id"] == runner.run_id and result["status"] == "ok"
    with Store(db, create=False) as again:
        (run,) = again.runs()
        rows = again.rows(runner.run_id)
    # rnn kept its one window from before; gru was added; gpt stays filtered out
    assert [(r.arch, r.repeat) for r in rows] == [("rnn", 0), ("gru", 0), ("gru", 1)]
    assert {r.intensity_g_per_kwh for r in rows} == {123.0}
    assert run.label == "night" and len(run.metadata.resumed_at) == 1
    assert run.metadata.sensor_constants["modelled-cpu"]["p_max_w"] == 42.0
    assert main(["run", "--resume", "latest", "--cpu-tdp", "9", "--db", db]) == 2
    assert "drop --cpu-tdp" in capsys.readouterr().err
    assert [c["arch"] for c in result["cases"]] == ["rnn", "gru"]
    assert main(["run", "--resume", "latest", "--db", db]) == 2
    assert "has rows for every case: nothing to resume" in capsys.readouterr().err
    with Store(db, create=False) as again:  # marked running by a process that is alive
        alive = Process(pid=os.getppid(), started=time.time())
        again.reopen_run(runner.run_id, run.metadata.replace(process=alive).to_dict())
    assert main(["run", "--resume", "latest", "--db", db]) == 2
    assert f"run {runner.run_id} is still running (process {os.getppid()}" in (
        capsys.readouterr().err
    )
    with Store(db, create=False) as again:  # a run of another machine
        other = run.metadata.replace(cpu="Other CPU").to_dict()
        again.end_run(runner.run_id, "failed", "now", other)
    assert main(["run", "--resume", "latest", "--db", db]) == 2
    assert "ran on other hardware" in capsys.readouterr().err


def test_energy_to_target(tmp_path) -> None:
    status, runner, store = run(fast_suite(phases=("train-to-target",), target=6.5), tmp_path)
    (row,) = store.rows(runner.run_id)
    assert status == "ok" and row.reached_target is True
    assert row.loss <= 6.5 and row.target_loss == 6.5 and row.energy_j > 0
    assert row.steps % 2 == 0
    status, runner, store = run(
        fast_suite(phases=("train-to-target",), target=0.001, max_steps=4), tmp_path
    )
    (row,) = store.rows(runner.run_id)
    assert row.reached_target is False and row.steps == 4


def test_corpus_training_reads_the_corpus(tmp_path, monkeypatch) -> None:
    corpus = tmp_path / "corpus.txt"
    text = "the quick brown fox jumps over the lazy dog. " * 50
    corpus.write_text(text)
    drawn: list[torch.Tensor] = []

    class Spy(workloads.CorpusSource):
        def sample(self, batch, length):
            tokens = super().sample(batch, length)
            drawn.append(tokens)
            return tokens

    monkeypatch.setattr(workloads, "CorpusSource", Spy)
    suite = fast_suite(archs=("lstm", "transformer"), phases=("train",))
    store = Store(tmp_path / "c.sqlite")
    with EnergyMeter([ModelledCpuSensor()], 0.02) as meter:
        runner = Runner(suite, store, meter, resolve(), RunOptions(corpus=str(corpus)))
        assert runner.run() == "ok"
    # every batch came from the corpus: its bytes, in its order
    assert drawn and all(int(t.max()) < 256 for t in drawn)
    window = bytes(drawn[0][0].tolist())
    assert window in text.encode() * 2
    assert store.run(runner.run_id).metadata.options.corpus == str(corpus)


def test_generation_workloads_count_their_tokens() -> None:
    model = build("gpt")
    decode = make_workload(
        model, "decode", batch=3, seq_len=10, device=torch.device("cpu"), new_tokens=5
    )
    assert decode.work.tokens == 15 and decode.work.flops > 0
    decode.step()
    decode.step()  # restarts from the prompt each time: no growth past max_len
    with pytest.raises(ValueError, match="exceed max_len"):
        make_workload(
            model, "prefill", batch=1, seq_len=250, device=torch.device("cpu"), new_tokens=10
        )
    with pytest.raises(ValueError, match=r"decode needs a key/value cache \(gpt only\)"):
        make_workload(build("lstm"), "decode", batch=1, seq_len=4, device=torch.device("cpu"))
    model = build("rnn")
    outputs = []
    model.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    infer = make_workload(
        model, "infer", batch=2, seq_len=4, device=torch.device("cpu"), dtype="bfloat16"
    )
    assert infer.step() is None and not model.training
    ((logits),) = outputs
    assert logits.shape == (2, 4, model.config.vocab) and logits.dtype == torch.bfloat16
    assert infer.work.tokens == 8 and infer.work.flops > 0


def test_cli_run_export_and_runs(tmp_path, capsys) -> None:
    suite_file = tmp_path / "fast.toml"
    suite_file.write_text(fast_suite().text)
    db = str(tmp_path / "cli.sqlite")
    assert main(["run", "--suite", str(suite_file), "--db", db, "--json", "--country", "FRA"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "ok" and result["db"] == db
    assert result["cases"][0]["g_co2e_per_1k_tokens"] > 0
    assert main(["export", "--db", db, "--run", "latest", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in rows} == {result["run_id"]}
    for key in ("arch", "phase", "energy_j", "tokens", "flops", "co2e_g", "duration_s", "status"):
        assert key in rows[0]
    assert "France" in rows[0]["intensity_source"]
    assert (rows[0]["intensity_year"], rows[0]["intensity_region"]) == (2023, "FRA")
    out = tmp_path / "rows.parquet"
    assert main(["export", "--db", db, "--format", "parquet", "-o", str(out)]) == 0
    assert len(pd.read_parquet(out)) == len(rows)
    assert main(["export", "--db", db, "--format", "csv", "-o", str(tmp_path / "r.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(rows)
    assert main(["runs", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rows"] == len(rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--arch", "nope"], "--arch 'nope' matches no case of suite 'smoke'; its arch"),
        (
            ["run", "--arch", "rnn", "--phase", "prefill"],
            "no case of suite 'smoke' matches the filters given",
        ),
        (["run", "--suite", "weekly"], "no suite named 'weekly'"),
        (["export", "--format", "json", "--db", "{tmp}/absent.sqlite"], "no results store at"),
        (["export", "--format", "json", "--db", "{tmp}/junk.sqlite"], "not a readable SQLite"),
        (["runs", "--db", "{tmp}/junk.sqlite"], "left untouched"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message) -> None:
    (tmp_path / "junk.sqlite").write_bytes(b"junk" * 1000)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("carbonbench: error: ") and message in err and "\n" not in err
