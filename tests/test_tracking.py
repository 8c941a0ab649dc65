"""Users' own work through the same meter and store: any command, a block of code, and
architectures from a module path or an installed package's entry point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

import carbonbench
from carbonbench import models
from carbonbench.cli import main
from carbonbench.results.store import Store


def test_measure_passes_output_and_exit_status_through_and_stores_a_run(tmp_path) -> None:
    db = tmp_path / "m.sqlite"
    code = "import sys, time; print('to stdout'); time.sleep(0.3); sys.exit(3)"
    command = [sys.executable, "-m", "carbonbench", "measure", "--db", str(db), "--work", "500"]
    done = subprocess.run(
        [*command, "--unit", "token", "--label", "job", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert done.stdout == "to stdout\n"  # the command's output, untouched
    assert "per token" in done.stderr and "exit status 3" in done.stderr
    with Store(db, create=False) as store:
        (run,) = store.runs()
        (row,) = store.rows(run.run_id)
    assert run.metadata.kind == "command" and run.metadata.exit_status == 3
    assert run.metadata.command[-1] == code and run.status == "failed"
    assert row.tokens == 500 and row.energy_j > 0 and row.duration_s >= 0.3
    assert set(row.method_by_domain.values()) <= {"counter", "power-sampled", "modelled"}
    assert row.extra["unit"] == "token" and row.timeline["t"]
    assert main(["export", "--db", str(db), "--format", "json"]) == 0


def test_measure_forwards_sigterm_and_keeps_the_measurement(tmp_path) -> None:
    db = tmp_path / "s.sqlite"
    marker = tmp_path / "got-term"
    code = (
        "import signal, sys, time, pathlib\n"
        f"def stop(*a): pathlib.Path({str(marker)!r}).touch(); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    command = [sys.executable, "-m", "carbonbench", "measure", "--db", str(db), "--"]
    proc = subprocess.Popen(
        [*command, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # the command's own exit status after its handler ran
    assert marker.exists()
    with Store(db, create=False) as store:
        (run,) = store.runs()
        (row,) = store.rows(run.run_id)
    assert run.metadata.signals == ["SIGTERM"] and row.energy_j > 0


def test_measure_needs_a_command(capsys) -> None:
    assert main(["measure", "--"]) == 2
    assert "give the command to measure" in capsys.readouterr().err
    assert main(["measure", "--", "no-such-command-here"]) == 2
    assert "no command 'no-such-command-here'" in capsys.readouterr().err


def test_track_measures_a_block_and_a_function(tmp_path) -> None:
    db = tmp_path / "t.sqlite"
    with carbonbench.track("block", db=db, work=10, unit="sample") as t:
        sum(i * i for i in range(200_000))
    assert t.measurement.duration_s > 0 and t.measurement.total_energy_j > 0
    assert t.row.tokens == 10

    @carbonbench.track("decorated", db=db)
    def work() -> int:
        return 42

    assert work() == 42
    with Store(db, create=False) as store:
        runs = store.runs()
    assert [(r.label, r.metadata.kind, r.status) for r in runs] == [
        ("block", "block", "ok"),
        ("decorated", "block", "ok"),
    ]
    with pytest.raises(ZeroDivisionError), carbonbench.track("broken", db=db):
        1 / 0  # noqa: B018
    with Store(db, create=False) as store:
        broken = store.runs()[-1]
    assert broken.status == "failed" and "ZeroDivisionError" in broken.metadata.error
    with carbonbench.track("unstored", db=None) as t:
        pass
    assert t.run_id is None and t.measurement is not None


def test_an_installed_package_registers_architectures_by_entry_point(
    tmp_path, monkeypatch, capsys
) -> None:
    dist = tmp_path / "site" / "fake_models-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[carbonbench.architectures]\nmlp-plugin = tests.examples.mlp_lm:MLP_LM\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(models.registry, "_plugins_loaded", False)
    try:
        model = models.build("mlp-plugin")
        assert model.arch == "mlp-plugin"
        assert main(["models", "--json"]) == 0
        listed = {r["arch"]: r for r in json.loads(capsys.readouterr().out)}
        assert listed["mlp-plugin"]["source"].startswith("fake-models (entry point tests.")
    finally:
        models.ARCHITECTURES.pop("mlp-plugin", None)


def test_a_module_path_names_an_architecture(tmp_path, capsys) -> None:
    name = "tests.examples.mlp_lm:MLP_LM"
    try:
        assert models.build(name).arch == name
        assert main(["models", "--json"]) == 0
        listed = {r["arch"]: r for r in json.loads(capsys.readouterr().out)}
        assert listed[name]["source"] == "tests.examples.mlp_lm"  # as the record says
    finally:
        models.ARCHITECTURES.pop(name, None)
    for wrong, message in (
        ("tests.examples.nope:X", "cannot import 'tests.examples.nope'"),
        ("tests.examples.mlp_lm:MLPConfig", "is type, not an Architecture record"),
        ("tests.examples.mlp_lm:MISSING", "is missing, not an Architecture record"),
    ):
        with pytest.raises(ValueError, match=message):
            models.build(wrong)


def test_flops_the_counter_cannot_see_are_stored_as_unknown(tmp_path, capsys) -> None:
    from carbonbench.analysis.summary import summarise
    from tests.helpers import fast_suite, run

    suite = fast_suite(archs=("tests.examples.bigram:BIGRAM",), phases=("train", "infer"))
    try:
        status, runner, store = run(suite, tmp_path)
        rows = store.rows(runner.run_id)
    finally:
        models.ARCHITECTURES.pop("tests.examples.bigram:BIGRAM", None)
    assert status == "ok" and rows and all(r.flops is None and r.energy_j > 0 for r in rows)
    assert all(s.j_per_tflop is None and s.j_per_token > 0 for s in summarise(rows))
    assert main(["export", "--db", str(store.path), "--format", "json"]) == 0
    assert {r["flops"] for r in json.loads(capsys.readouterr().out)} == {None}
