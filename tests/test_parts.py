"""The parts a run is made of, each alone: provenance, the recorder, the case runner and the
coordinator it consults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import ModelledCpuSensor
from carbonbench.execution.coordination import SOLO
from carbonbench.execution.runner import CaseRunner
from carbonbench.results.recorder import Recorder
from carbonbench.results.store import Store
from carbonbench.suites.case import Case
from tests.helpers import begin_run, fast_suite

CASE = Case("gpt", "tiny", "fused", "train", 2, 8, "cpu", "float32")


def test_provenance_of_the_host_needs_no_torch() -> None:
    code = (
        "import sys; from carbonbench.energy.provenance import host; h = host(); "
        "print(sorted(h), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "'git_commit'" in done.stdout and "'versions'" in done.stdout
    assert done.stdout.strip().endswith("False")


def test_recorder_makes_rows_with_the_runs_carbon_and_writes_them(tmp_path) -> None:
    with Store(tmp_path / "r.sqlite") as store:
        begin_run(store, "run", metadata={})
        seen = []
        recorder = Recorder(store, "run", resolve(intensity=500.0, pue=1.5), on_row=seen.append)
        row = recorder.row(CASE, 3, 1, energy_j=7.2e6, tokens=10)
        assert (row.case_id, row.round, row.repeat) == (CASE.case_id, 3, 1)
        assert row.kwh == pytest.approx(2.0) and row.co2e_g == pytest.approx(2.0 * 1.5 * 500)
        assert row.case == CASE
        recorder.save(row)
        failed = recorder.failed(CASE, 4, "boom", params=9)
        assert (failed.status, failed.error, failed.round) == ("failed", "boom", 4)
        assert [r.round for r in store.rows("run")] == [3, 4] and seen == [row, failed]
    silent = Recorder(None, "run", resolve(intensity=1.0))
    silent.save(row)  # a rank whose rank 0 writes: made, not written
    assert silent.rows == []


def test_case_runner_measures_one_case_in_a_given_round(tmp_path) -> None:
    suite = fast_suite()
    with Store(tmp_path / "c.sqlite") as store, EnergyMeter([ModelledCpuSensor()], 0.02) as m:
        begin_run(store, "run", metadata={})
        recorder = Recorder(store, "run", resolve(intensity=1.0))
        runner = CaseRunner(suite, m, recorder, coordinator=SOLO)
        (case,) = suite.cases
        assert runner.run_case(case, round=2)
        rows = store.rows("run")
    assert [(r.round, r.repeat, r.status) for r in rows] == [(2, 0, "ok"), (2, 1, "ok")]
    assert rows[0].extra["warmup"]["steps"] == 1 and "warmup" not in rows[1].extra


def test_solo_decides_alone() -> None:
    assert SOLO.agree(7) == 7 and SOLO.agree_flag(True) and not SOLO.agree_flag(False)
    assert SOLO.writes and SOLO.world_size == 1 and SOLO.check_every_step()
