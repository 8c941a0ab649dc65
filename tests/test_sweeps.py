"""Settings as suite axes, applied per case and recorded per row; sweeps that stop early."""

from __future__ import annotations

import pytest
import torch

from carbonbench.analysis.pareto import analyse, confidently_dominated
from carbonbench.energy.carbon import resolve
from carbonbench.execution import settings
from carbonbench.execution.runner import RunOptions, new_run_id
from carbonbench.execution.supervisor import SWEEP_X, SWEEP_Y, Supervisor
from carbonbench.results.store import Store
from carbonbench.suites.case import Case
from carbonbench.suites.suite import SuiteError, load, parse
from tests.helpers import run

SWEEP = """
[suite]
name = "sweep"

[matrix]
arch = ["gpt"]
phase = ["train"]
batch = {batch}
seq_len = [8]
device = {devices}
{knobs}

[measure]
warmup_steps = 1
min_window_s = {window}
repeats = {repeats}
idle_baseline_s = 0
interval_s = 0.02
rounds = {rounds}
{sweep}
"""


def sweep_suite(batch=(2,), devices=("cpu",), knobs="", rounds=1, sweep="", window=0.05, repeats=1):
    text = SWEEP.format(
        batch=list(batch),
        devices=str(list(devices)).replace("'", '"'),
        knobs=knobs,
        rounds=rounds,
        sweep=sweep,
        window=window,
        repeats=repeats,
    )
    return parse(text, "sweep.toml")


def test_settings_are_case_fields_in_the_id_only_when_given():
    plain = Case("gpt", "tiny", "fused", "train", 2, 8, "cpu", "float32")
    assert plain.case_id == "gpt/tiny/fused/train/b2/s8/cpu/float32"  # as before settings
    tuned = Case("gpt", "tiny", "fused", "train", 2, 8, "cuda", "float32", 4, 300, 1410)
    assert tuned.case_id == "gpt/tiny/fused/train/b2/s8/cuda/float32/t4/pl300w/sm1410mhz"
    assert tuned.settings["power_limit_w"] == 300 and tuned.settings["batch"] == 2


def test_a_matrix_sweeps_threads_and_gpu_settings_touch_only_gpu_cases():
    suite = sweep_suite(knobs="threads = [1, 2]")
    assert [c.threads for c in suite.cases] == [1, 2]
    mixed = sweep_suite(devices=("cpu", "cuda"), knobs="power_limit_w = [300, 400]")
    by_device = {
        d: [c.power_limit_w for c in mixed.cases if c.device == d] for d in ("cpu", "cuda")
    }
    assert by_device == {"cpu": [None], "cuda": [300, 400]}


def test_gpu_settings_without_a_gpu_and_unknown_sweeps_are_refused():
    with pytest.raises(SuiteError, match=r"power_limit_w sets a GPU.*no cuda device"):
        sweep_suite(knobs="power_limit_w = [300]")
    with pytest.raises(SuiteError, match=r"sm_clock_mhz values must be positive"):
        sweep_suite(devices=("cuda",), knobs="sm_clock_mhz = [0]")
    with pytest.raises(SuiteError, match=r"sweep has 'greedy'; valid: halving"):
        sweep_suite(sweep='sweep = "greedy"')


def test_the_settings_suites_ship():
    cpu, gpu = load("settings"), load("gpu-settings")
    assert {c.threads for c in cpu.cases} == {1, 2} and cpu.measure.sweep == "halving"
    assert {c.dtype for c in cpu.cases} == {"float32", "bfloat16"}
    assert len({c.power_limit_w for c in gpu.cases}) == 3


def test_threads_hold_inside_the_case_and_are_put_back():
    before = torch.get_num_threads()
    with settings.threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), settings.threads(1):
        raise RuntimeError("the case failed")
    assert torch.get_num_threads() == before


def test_rows_record_the_settings_they_were_measured_at(tmp_path):
    status, runner, store = run(sweep_suite(knobs="threads = [1]"), tmp_path)
    rows = runner.rows
    assert status == "ok" and rows and {r.threads for r in rows} == {1}
    assert {r.power_limit_w for r in rows} == {None}
    stored = store.rows()
    assert {r.threads for r in stored} == {1} and stored[0].case_id.endswith("/t1")


def _supervised(suite, tmp_path, drop=None):
    db = tmp_path / f"{suite.name}-{suite.measure.sweep}.sqlite"
    supervisor = Supervisor(
        suite, db, resolve(intensity=100.0), RunOptions(), run_id=new_run_id(), drop=drop
    )
    assert supervisor.run().status == "ok"
    with Store(db, create=False) as store:
        return store.run(supervisor.run_id), store.rows(supervisor.run_id)


def _halving(rows):
    return confidently_dominated(rows, x=SWEEP_X, y=SWEEP_Y)


def test_a_halving_sweep_stops_giving_rounds_to_a_setting_beaten_with_confidence(tmp_path):
    """Batch 1 against batch 64 of one tiny model: the larger batch costs far less time and
    energy per token, so once the rule trusts an interval (three rounds; one more where a
    round was disturbed) batch 1 is dropped, and the later rounds measure batch 64 alone."""
    suite = sweep_suite(batch=(1, 64), rounds=5, sweep='sweep = "halving"', window=0.2, repeats=2)
    record, rows = _supervised(suite, tmp_path, drop=_halving)
    small, large = (c.case_id for c in suite.cases)
    sweep = record.metadata.sweep
    assert sweep is not None and sweep.method == "halving"
    assert (sweep.x, sweep.y) == (SWEEP_X, SWEEP_Y)
    assert list(sweep.dropped) == [small] and sweep.dropped[small]["by"] == large
    last = sweep.dropped[small]["after_round"]
    assert last in (2, 3)
    rounds = {c: sorted({r.round for r in rows if r.case_id == c}) for c in (small, large)}
    assert rounds == {small: list(range(last + 1)), large: [0, 1, 2, 3, 4]}
    assert [ids for r, ids in record.metadata.case_order if r == 4] == [[large]]


def test_halving_reaches_the_full_grids_front_and_recommendation_with_fewer_rounds(tmp_path):
    """The full grid measured, then halving replayed on its rows round by round (a dropped
    setting's later rounds taken away): same front, same recommended setting, fewer rows."""
    full_record, full = _supervised(
        sweep_suite(batch=(1, 4, 32), rounds=5, window=0.2, repeats=2), tmp_path
    )
    dropped: dict[str, int] = {}
    for r in range(5):
        seen = [row for row in full if row.round <= r and row.round <= dropped.get(row.case_id, r)]
        for case_id in _halving(seen):
            dropped.setdefault(case_id, r)
    kept = [row for row in full if row.round <= dropped.get(row.case_id, 4)]
    assert dropped and len(kept) < len(full)
    both = [analyse(rows, full_record) for rows in (full, kept)]
    fronts = [[s.case_id for s in p.groups[0].front] for p in both]
    picks = [p.groups[0].recommended.setting.case_id for p in both]
    assert fronts[0] == fronts[1] and picks[0] == picks[1]
    assert not set(dropped) & set(fronts[0])


def test_a_sweep_needs_its_rule():
    with pytest.raises(ValueError, match="halving"):
        Supervisor(
            sweep_suite(rounds=2, sweep='sweep = "halving"'),
            "x.sqlite",
            resolve(intensity=1.0),
            RunOptions(),
            run_id="r",
        )
