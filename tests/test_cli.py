"""The carbonbench command, called as users call it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from carbonbench.cli import main
from tests.helpers import make_powercap


def test_models_json_lists_every_architecture(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["arch"] for r in rows} >= {"rnn", "lstm", "gru", "transformer", "seq2seq-lstm", "gpt"}
    assert all(r["parameters"]["tiny"] < 1e6 for r in rows if r["source"] == "built-in")


def test_sensors_on_this_machine_explains_the_modelled_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(tmp_path / "none"))
    assert main(["sensors", "--json", "--seconds", "0.2", "--cpu-tdp", "65"]) == 0
    rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)["domains"]}
    cpu = rows["cpu:modelled"]
    assert cpu["method"] == "modelled" and cpu["constants"]["p_max_w"] == 65.0
    assert cpu["why_not_better"][0]["source"] == "rapl"
    assert "CARBONBENCH_POWERCAP_ROOT" in cpu["why_not_better"][0]["fix"]
    assert rows["ram:modelled"]["power_w"] > 0


def test_sensors_reads_a_powercap_tree(tmp_path, monkeypatch, capsys) -> None:
    make_powercap(tmp_path)
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(tmp_path))
    assert main(["sensors", "--json", "--seconds", "0.1"]) == 0
    rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)["domains"]}
    assert rows["cpu:package-0"]["method"] == "counter"
    assert rows["cpu:psys"]["added_to_total"] is False
    assert "cpu:modelled" not in rows and "ram:modelled" not in rows


def test_sensors_table_numbers_its_diagnostics(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(tmp_path / "none"))
    assert main(["sensors", "--seconds", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "cpu:modelled" in out and "rapl: powercap directory" in out


def test_bad_value_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CARBONBENCH_POWERCAP_ROOT", str(tmp_path / "none"))
    assert main(["sensors", "--cpu-tdp", "-5", "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "carbonbench: error: cpu TDP must be positive watts, got -5.0"


@pytest.mark.parametrize("argv", [["--version"], ["models", "--help"]])
def test_python_dash_m_carbonbench_is_the_command(argv) -> None:
    command = [sys.executable, "-m", "carbonbench", *argv]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0
    assert "carbonbench" in done.stdout
