"""Extending carbonbench as the README's "Extending" section shows: a new architecture and a
new power source, each one file (tests/examples/) and one registry line, run through the
same harness, meter and command line as the built-ins with nothing else changed."""

from __future__ import annotations

import json

import pytest

from carbonbench import models
from carbonbench.cli import main
from carbonbench.energy import sensors
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import detect_sensors, modelled
from carbonbench.models.flops import analytic_flops, count_flops
from tests.examples import hwmon_energy
from tests.examples.mlp_lm import MLP_LM
from tests.helpers import fast_suite, run


@pytest.fixture
def mlp_registered():
    models.register(MLP_LM)  # the one registry line
    yield
    del models.ARCHITECTURES[MLP_LM.name]


def test_a_registered_architecture_builds_counts_and_is_listed(mlp_registered, capsys) -> None:
    model = models.build("mlp-lm", "tiny")
    assert (model.arch, model.impl, model.config) == ("mlp-lm", "reference", MLP_LM.sizes["tiny"])
    (tokens,) = models.example_batch(model, 2, 16)
    assert model(tokens).shape == (2, 16, 512)
    counted = count_flops(model, 2, 16)
    assert counted.forward == analytic_flops("mlp-lm", model.config, 2, 16) > 0
    with pytest.raises(ValueError, match="unknown impl 'fused'; valid: reference"):
        models.build("mlp-lm", impl="fused")
    assert main(["models", "--json"]) == 0
    listed = {r["arch"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["mlp-lm"]["source"] == "tests.examples.mlp_lm"
    assert listed["mlp-lm"]["parameters"]["tiny"] == models.count_parameters(model)
    assert listed["gpt"]["generates"] and not listed["mlp-lm"]["generates"]


def test_a_registered_architecture_runs_through_the_harness(mlp_registered, tmp_path) -> None:
    suite = fast_suite(
        archs=("mlp-lm",), phases=("train", "infer", "generate"), impls=("reference", "fused")
    )
    assert [(c.impl, c.phase) for c in suite.cases] == [
        ("reference", "train"),
        ("reference", "infer"),
    ]
    assert any("mlp-lm" in s and "key/value cache (gpt only)" in s for s in suite.skipped)
    assert any(s.endswith("mlp-lm has no fused variant (reference)") for s in suite.skipped)
    status, runner, store = run(suite, tmp_path)
    rows = store.rows(runner.run_id)
    assert status == "ok" and {r.phase for r in rows} == {"train", "infer"}
    assert all(r.status == "ok" and r.flops > 0 and r.energy_j > 0 for r in rows)
    train = next(r for r in rows if r.phase == "train")
    assert train.loss is not None and train.params == models.count_parameters(
        models.build("mlp-lm")
    )


def test_an_unregistered_architecture_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'mlp-lm'; valid: rnn, lstm"):
        models.build("mlp-lm")


def _amd_energy_tree(root, socket_uj: int) -> None:
    device = root / "hwmon3"
    device.mkdir(parents=True)
    (device / "name").write_text("amd_energy\n")
    (device / "energy1_label").write_text("Ecore000\n")
    (device / "energy1_input").write_text("5\n")
    (device / "energy17_label").write_text("Esocket0\n")
    (device / "energy17_input").write_text(f"{socket_uj}\n")


@pytest.fixture
def hwmon_listed(monkeypatch, tmp_path):
    factories = list(sensors.FACTORIES)
    factories.insert(factories.index(modelled.CPU_FACTORY), hwmon_energy.FACTORY)  # the line
    monkeypatch.setattr(sensors, "FACTORIES", factories)
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(tmp_path / "no-rapl"))
    monkeypatch.setenv("CARBONBENCH_HWMON_ROOT", str(tmp_path / "hwmon"))
    return tmp_path / "hwmon"


def test_a_listed_sensor_replaces_the_modelled_cpu(hwmon_listed) -> None:
    _amd_energy_tree(hwmon_listed, 1_000_000)
    detection = detect_sensors(components={"cpu", "memory"})
    assert [s.source for s in detection.sensors] == ["hwmon", "modelled-ram"]
    with EnergyMeter(detection.sensors, interval_s=0.01) as meter, meter.window("w") as m:
        (hwmon_listed / "hwmon3" / "energy17_input").write_text("4500000\n")
    assert m.method["cpu:socket-0"] == "counter"
    assert m.energy_j["cpu:socket-0"] == pytest.approx(3.5)


def test_a_listed_sensor_that_cannot_run_explains_the_fallback(hwmon_listed, capsys) -> None:
    assert main(["sensors", "--json", "--seconds", "0.1"]) == 0
    rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)["domains"]}
    why = [d["source"] for d in rows["cpu:modelled"]["why_not_better"]]
    assert why == ["rapl", "hwmon"]


def test_sensors_command_shows_a_listed_sensor(hwmon_listed, capsys) -> None:
    _amd_energy_tree(hwmon_listed, 7)
    assert main(["sensors", "--json", "--seconds", "0.1"]) == 0
    rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)["domains"]}
    assert rows["cpu:socket-0"]["source"] == "hwmon"
    assert rows["cpu:socket-0"]["method"] == "counter"
    assert "cpu:modelled" not in rows and rows["ram:modelled"]["method"] == "modelled"
