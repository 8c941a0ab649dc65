"""``carbonbench pareto``: settings' front, statuses, the recommendation by both rules, the
saving's interval, confident domination (what halving drops), the command and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carbonbench.analysis.pareto import (
    Interval,
    ParetoError,
    Setting,
    analyse,
    confidently_dominated,
    max_power,
    parse_baseline,
    recommend,
    saving,
    settings_of,
    sweeps,
)
from carbonbench.cli import main
from carbonbench.reports.html import render
from carbonbench.results.metadata import RunMetadata
from carbonbench.results.store import ResultRow, RunRecord, Store
from carbonbench.suites.case import Case
from tests.helpers import begin_run

SUITE = """
[suite]
name = "threads"

[matrix]
arch = ["gpt"]
phase = ["train"]
batch = [{batches}]
seq_len = [64]
threads = [1, 2, 4]

[measure]
rounds = 5
"""

# (threads, batch) -> (seconds per token, joules per token): a front of three (C, E, D), one
# setting beaten in medians only (B, by E), and two beaten clearly (A, the default, and F)
DESIGN = {
    (1, 8): (1.00e-3, 10.0e-3),  # A: the default (the suite's first values)
    (2, 8): (0.56e-3, 7.15e-3),  # B: E is better by 2-4%, within the rounds' noise
    (4, 8): (0.50e-3, 9.0e-3),  # C: the fastest
    (1, 16): (0.80e-3, 6.0e-3),  # D: the least energy
    (2, 16): (0.54e-3, 7.0e-3),  # E: the least energy within 10% of the fastest
    (4, 16): (0.90e-3, 11.0e-3),  # F: beaten by everything but A
}
TOKENS = 4096


def case(threads: int, batch: int, device: str = "cpu") -> Case:
    return Case("gpt", "tiny", "fused", "train", batch, 64, device, "float32", threads=threads)


def make_rows(
    run_id: str = "r1",
    design: dict[tuple[int, int], tuple[float, float]] = DESIGN,
    rounds: int = 5,
    seed: int = 1,
    device: str = "cpu",
) -> list[ResultRow]:
    """Two windows per setting and round; each round shifts every setting alike by up to a few
    percent (one worker process's conditions) and each setting by its own noise too."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(rounds):
        shared = rng.normal(0, 0.03)
        for (threads, batch), (t, e) in design.items():
            own_t, own_e = rng.normal(0, 0.015, 2)
            c = case(threads, batch, device)
            for repeat in range(2):
                jitter = rng.normal(0, 0.003, 2)
                seconds = t * (1 + shared + own_t + jitter[0]) * TOKENS
                joules = e * (1 + shared + own_e + jitter[1]) * TOKENS
                rows.append(
                    ResultRow(
                        run_id=run_id,
                        case_id=c.case_id,
                        repeat=repeat,
                        round=r,
                        **{k: getattr(c, k) for k in Case.__dataclass_fields__},
                        steps=10,
                        samples=10 * batch,
                        tokens=TOKENS,
                        duration_s=seconds,
                        energy_j=joules,
                        energy_by_domain={"cpu:modelled": joules},
                        method_by_domain={"cpu:modelled": "modelled"},
                        additive_by_domain={"cpu:modelled": True},
                        co2e_g=joules / 3.6e6 * 400,
                    )
                )
    return rows


def suite_text(batches: str = "8, 16") -> str:
    return SUITE.format(batches=batches)


def run_record(rows, text: str | None = None, constants: dict | None = None) -> RunRecord:
    """A run's record as the store gives it back, over ``rows``."""
    return RunRecord(
        run_id=rows[0].run_id,
        seq=1,
        label=None,
        suite_name="threads",
        suite_source="threads.toml",
        suite_text=suite_text() if text is None else text,
        status="ok",
        started_at="2026-01-01T00:00:00+00:00",
        ended_at=None,
        metadata=RunMetadata(cpu="CPU", sensor_constants=constants or {}),
    )


def by_setting(group) -> dict[tuple[int, int], object]:
    return {(s.setting["threads"], s.setting["batch"]): s for s in group.settings}


# -- analysis ----------------------------------------------------------------------------


def test_groups_sweep_the_knobs_with_more_than_one_value() -> None:
    rows = make_rows() + make_rows(design={(1, 8): (1e-3, 1e-2)}, device="cuda")
    (group,) = sweeps(rows)  # the cuda case sweeps nothing: one setting
    assert group.knobs == ("batch", "threads")
    assert group.key == {
        "arch": "gpt",
        "phase": "train",
        "device": "cpu",
        "seq_len": 64,
        "dtype": "float32",
        "impl": "fused",
        "size": "tiny",
        "power_limit_w": None,
        "sm_clock_mhz": None,
        "concurrency": None,
        "rate": None,
    }
    assert len({r.case_id for r in group.rows}) == 6


def test_front_and_statuses() -> None:
    settings, left_out = settings_of(make_rows())
    assert left_out == []
    s = {(x.setting["threads"], x.setting["batch"]): x for x in settings}
    assert {k for k, v in s.items() if v.status == "front"} == {(4, 8), (2, 16), (1, 16)}
    assert s[(2, 8)].status == "dominated-not-significantly"
    assert s[(2, 8)].dominated_by == case(2, 16).case_id
    assert s[(1, 8)].status == "dominated" and s[(4, 16)].status == "dominated"
    # the medians are the design's, within the rounds' noise; the intervals hold them
    for key, (t, e) in DESIGN.items():
        assert s[key].x.median == pytest.approx(t, rel=0.05)
        assert s[key].y.median == pytest.approx(e, rel=0.05)
        assert s[key].y.low <= s[key].y.median <= s[key].y.high and s[key].rounds == 5
    assert [x.x.median for x in settings] == sorted(x.x.median for x in settings)
    # B's intervals overlap E's on at least one axis, A's lie apart from E's on both
    b, e, a = s[(2, 8)], s[(2, 16)], s[(1, 8)]
    assert not (e.x.high < b.x.low and e.y.high < b.y.low)
    assert e.x.high < a.x.low and e.y.high < a.y.low


def test_ties_dominate_only_with_one_strict_improvement() -> None:
    design = {(1, 8): (1e-3, 5e-3), (2, 8): (1e-3, 5e-3), (4, 8): (1e-3, 6e-3)}
    rows = [r for r in make_rows(design=design, seed=3)]
    for r in rows:  # no noise at all: exact ties
        t, e = design[(r.threads, r.batch)]
        r.duration_s, r.energy_j = t * TOKENS, e * TOKENS
    s = {x.setting["threads"]: x for x in settings_of(rows)[0]}
    assert s[1].status == s[2].status == "front"  # equal on both: neither dominates
    # the same time, more energy: dominated, but its x interval is not apart from theirs
    assert s[4].status == "dominated-not-significantly" and s[4].dominated_by == s[1].case_id


def test_confidently_dominated() -> None:
    rows = make_rows()
    found = confidently_dominated(rows, x="time_per_token", y="energy_per_token", min_rounds=3)
    assert set(found) == {case(1, 8).case_id, case(4, 16).case_id}
    settings = {s.case_id: s for s in settings_of(rows)[0]}
    for loser, winner in found.items():
        a, b = settings[winner], settings[loser]
        assert a.x.high < b.x.low and a.y.high < b.y.low
    assert confidently_dominated(rows, min_rounds=6) == {}  # five rounds are not enough
    two = [r for r in rows if r.round < 2]
    assert confidently_dominated(two) == {}
    assert confidently_dominated(make_rows(design={(1, 8): DESIGN[(1, 8)]})) == {}  # no sweep


def test_recommendation_by_max_slowdown_and_by_eta() -> None:
    settings = by_setting(analyse(make_rows(), run_record(make_rows())).groups[0])
    values = list(settings.values())
    assert recommend(values) is settings[(2, 16)]  # E: within 1.1 x C's time
    assert recommend(values, max_slowdown=1.0) is settings[(4, 8)]  # C, the fastest
    assert recommend(values, max_slowdown=2.0) is settings[(1, 16)]  # D: least energy
    # cost = eta E + (1 - eta) P_max T, with P_max = 10 W
    assert recommend(values, eta=1.0, max_power_w=10.0) is settings[(1, 16)]
    assert recommend(values, eta=0.0, max_power_w=10.0) is settings[(4, 8)]
    assert recommend(values, eta=0.5, max_power_w=10.0) is settings[(2, 16)]


def test_saving_against_the_default_paired_by_round() -> None:
    rows = make_rows()
    (group,) = analyse(rows, run_record(rows)).groups
    assert group.baseline is by_setting(group)[(1, 8)]
    assert group.baseline_source == "the suite's first values"
    chosen = group.recommended
    assert chosen.setting is by_setting(group)[(2, 16)] and chosen.rule == "max_slowdown=1.1"
    expected = 1 - chosen.setting.y.median / group.baseline.y.median
    assert chosen.saving.median == pytest.approx(expected)
    assert expected == pytest.approx(0.3, abs=0.03)
    assert chosen.saving.low < chosen.saving.median < chosen.saving.high
    assert chosen.saving.low > 0.2 and chosen.saving.high < 0.4
    assert chosen.saving.significant and chosen.saving.rounds == 5
    assert chosen.slowdown.median == pytest.approx(0.54 - 1, abs=0.04)  # 46% faster
    assert chosen.slowdown.significant and chosen.slowdown.high < 0
    # pairing by round takes out each round's shared shift: a narrower interval than apart
    moved = {r + 100: v for r, v in chosen.setting.y.values.items()}  # no round in common
    apart = Setting("x", {}, chosen.setting.x, Interval.of("energy_per_token", moved))
    unpaired = saving(apart, group.baseline)
    assert unpaired.rounds == 0 and unpaired.median == pytest.approx(chosen.saving.median)
    assert unpaired.high - unpaired.low > chosen.saving.high - chosen.saving.low


def test_a_setting_against_itself_saves_nothing_significantly() -> None:
    rows = make_rows()
    (group,) = analyse(rows, run_record(rows), baseline={"threads": 2, "batch": 16}).groups
    assert group.baseline is group.recommended.setting and group.baseline_source == "--baseline"
    assert group.recommended.saving.median == 0 and not group.recommended.saving.significant


def test_default_setting_from_the_suite_or_its_matrix() -> None:
    rows = make_rows()
    (group,) = analyse(rows, run_record(rows, suite_text("16, 8"))).groups
    assert group.baseline is by_setting(group)[(1, 16)]
    # a suite that does not parse here (an architecture gone): its [matrix]'s first values
    text = suite_text("16, 8").replace('arch = ["gpt"]', 'arch = ["gone"]')
    (group,) = analyse(rows, run_record(rows, text)).groups
    assert group.baseline is by_setting(group)[(1, 16)]
    assert group.baseline_source == "the first values of the suite's [matrix]"
    # --baseline overrides the knobs it names, the others keep the suite's first values
    (group,) = analyse(rows, run_record(rows), baseline=parse_baseline("threads=4")).groups
    assert group.baseline is by_setting(group)[(4, 8)]
    with pytest.raises(ParetoError, match="no measured setting has batch=8,threads=3"):
        analyse(rows, run_record(rows), baseline={"threads": 3})


def test_parse_baseline() -> None:
    assert parse_baseline("threads=2, batch=8,dtype=bfloat16,power_limit_w=none") == {
        "threads": 2,
        "batch": 8,
        "dtype": "bfloat16",
        "power_limit_w": None,
    }
    for text, message in (
        ("colour=red", "unknown knob 'colour'"),
        ("threads=two", "threads must be an integer"),
        ("threads", "give knob=value pairs"),
    ):
        with pytest.raises(ParetoError, match=message):
            parse_baseline(text)


def test_max_power_from_the_run_sensors() -> None:
    gpu = {"nvml": {"gpus": {"gpu:0": {"name": "NVIDIA H200", "max_power_w": 700}}}}
    cpu = {"modelled-cpu": {"p_max_w": 95.0, "p_max_source": "given by the user (--cpu-tdp)"}}
    found = max_power(RunMetadata(sensor_constants=gpu), "cuda")
    assert found is not None and found.watts == 700 and "NVIDIA H200" in found.source
    assert max_power(RunMetadata(sensor_constants=gpu), "cuda:1") is not None  # the one GPU
    found = max_power(RunMetadata(sensor_constants=cpu), "cpu")
    assert found is not None and found.watts == 95 and "--cpu-tdp" in found.source
    rapl = {"rapl": {"max_power_w": {"cpu:package-0": 125.0, "cpu:package-1": 125.0}}, **cpu}
    found = max_power(RunMetadata(sensor_constants=rapl), "cpu")
    assert found is not None and found.watts == 250 and found.source.startswith("RAPL")
    assert max_power(RunMetadata(sensor_constants=cpu), "cuda") is None
    # as the NVML sensor reports it: the board's highest power limit per domain (None: unread)
    account = {
        "nvml": {
            "devices": {"gpu:0": "H200", "gpu:1": "H200"},
            "max_power_w": {"gpu:0": 700.0, "gpu:1": None},
        }
    }
    found = max_power(RunMetadata(sensors=account), "cuda:0")
    assert found is not None and found.watts == 700
    assert found.source == "NVML's highest power limit of gpu:0 (H200)"
    assert max_power(RunMetadata(sensors=account), "cuda:1") is None
    assert (
        max_power(RunMetadata(sensor_constants={"nvml": {"gpus": {"gpu:0": {}}}}), "cuda") is None
    )


def test_eta_needs_a_maximum_power() -> None:
    rows = make_rows()
    with pytest.raises(
        ParetoError, match=r"records neither a RAPL.*--max-power-w W.*--max-slowdown"
    ):
        analyse(rows, run_record(rows), eta=0.5)
    constants = {"modelled-cpu": {"p_max_w": 10.0, "p_max_source": "the table"}}
    (group,) = analyse(rows, run_record(rows, constants=constants), eta=0.5).groups
    assert group.recommended.setting is by_setting(group)[(2, 16)]
    assert group.recommended.rule == "eta=0.5 (P_max 10 W from the modelled CPU's P_max, the table)"
    (group,) = analyse(rows, run_record(rows), eta=0.0, max_power_w=10.0).groups
    assert group.recommended.setting is by_setting(group)[(4, 8)]
    assert group.recommended.max_power.source == "--max-power-w"
    with pytest.raises(ParetoError, match="--eta weighs an energy against the time"):
        analyse(rows, run_record(rows), eta=0.5, max_power_w=10.0, y="co2e_per_1k_tokens")


def test_metrics_from_extra_and_higher_is_better() -> None:
    rows = make_rows()
    for r in rows:  # a serving row's latency, here the inverse of the setting's energy
        r.extra = {"p90_itl_s": 1 / DESIGN[(r.threads, r.batch)][1], "warmup": {"t": []}}
    (group,) = analyse(rows, run_record(rows), y="p90_itl_s").groups
    assert group.settings[0].y.median == pytest.approx(1 / DESIGN[(4, 8)][1])
    assert {s.setting["threads"] for s in group.front} == {4}  # fastest and lowest p90_itl_s
    # tokens_per_s: higher is better, so the fastest is the best on x
    (group,) = analyse(rows, run_record(rows), x="tokens_per_s").groups
    assert {(s.setting["threads"], s.setting["batch"]) for s in group.front} == {
        (4, 8),
        (2, 16),
        (1, 16),
    }
    assert group.recommended.setting is by_setting(group)[(2, 16)]


def test_errors() -> None:
    rows = make_rows()
    with pytest.raises(ParetoError, match=r"--y: run r1 has no metric 'nope'; valid: .*energy_"):
        analyse(rows, run_record(rows), y="nope")
    single = make_rows(design={(1, 8): DESIGN[(1, 8)]})
    with pytest.raises(ParetoError, match=r"run r1 sweeps no setting.*\[matrix\]"):
        analyse(single, run_record(single))
    with pytest.raises(ParetoError, match="--max-slowdown must be at least 1"):
        analyse(rows, run_record(rows), max_slowdown=0.9)
    with pytest.raises(ParetoError, match="--eta must be in"):
        analyse(rows, run_record(rows), eta=1.5)


def test_failed_cases_are_left_out() -> None:
    rows = make_rows()
    for r in rows:
        if (r.threads, r.batch) == (4, 16):
            r.status, r.error, r.duration_s = "failed", "out of memory", 0.0
    (group,) = analyse(rows, run_record(rows)).groups
    assert group.left_out == [case(4, 16).case_id] and len(group.settings) == 5


# -- the command ------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path) -> Path:
    """A store with a swept run that records P_max (r1), one that does not (r3) and, latest,
    an unswept one (r2)."""
    path = tmp_path / "r.sqlite"
    constants = {"modelled-cpu": {"p_max_w": 10.0, "p_max_source": "given (--cpu-tdp)"}}
    with Store(path) as store:
        for run_id, text, metadata, design in (
            ("r1", suite_text(), {"sensor_constants": constants}, DESIGN),
            ("r3", suite_text(), {}, DESIGN),
            ("r2", suite_text("8"), {}, {(1, 8): DESIGN[(1, 8)]}),
        ):
            begin_run(store, run_id, suite_text=text, metadata={"cpu": "CPU", **metadata})
            for row in make_rows(run_id, design):
                store.add_row(row)
    return path


def test_cli_json(db, capsys) -> None:
    assert main(["pareto", "r1", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == "r1" and out["x"] == "time_per_token" and out["y"] == "energy_per_token"
    (group,) = out["groups"]
    assert group["knobs"] == ["batch", "threads"] and group["key"]["device"] == "cpu"
    assert len(group["settings"]) == 6
    first = group["settings"][0]
    assert first["setting"] == {
        "batch": 8,
        "seq_len": 64,
        "dtype": "float32",
        "impl": "fused",
        "size": "tiny",
        "threads": 4,
        "power_limit_w": None,
        "sm_clock_mhz": None,
        "concurrency": None,
        "rate": None,
    }
    assert first["case_id"] == case(4, 8).case_id and first["status"] == "front"
    assert set(first["x"]) == {"metric", "median", "low", "high"} and first["rounds"] == 5
    assert first["x"]["low"] <= first["x"]["median"] <= first["x"]["high"]
    statuses = {s["case_id"]: s["status"] for s in group["settings"]}
    assert statuses[case(2, 8).case_id] == "dominated-not-significantly"
    assert {f["case_id"] for f in group["front"]} == {
        case(4, 8).case_id,
        case(2, 16).case_id,
        case(1, 16).case_id,
    }
    chosen = group["recommended"]
    assert chosen["case_id"] == case(2, 16).case_id and chosen["rule"] == "max_slowdown=1.1"
    assert chosen["saving"]["significant"] is True and 0.25 < chosen["saving"]["median"] < 0.35
    assert chosen["saving"]["low"] < chosen["saving"]["median"] < chosen["saving"]["high"]
    assert set(chosen["slowdown"]) == {"median", "low", "high", "significant", "rounds"}
    assert group["baseline"]["case_id"] == case(1, 8).case_id

    assert main(["pareto", "r1", "--db", str(db), "--json", "--eta", "0"]) == 0
    chosen = json.loads(capsys.readouterr().out)["groups"][0]["recommended"]
    assert chosen["case_id"] == case(4, 8).case_id
    assert chosen["rule"] == "eta=0 (P_max 10 W from the modelled CPU's P_max, given (--cpu-tdp))"
    assert chosen["max_power"]["watts"] == 10.0


def test_cli_table(db, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["pareto", "r1", "--db", str(db), "--baseline", "threads=2"]) == 0
    out = capsys.readouterr().out
    assert "gpt · train · cpu (seq_len=64, dtype=float32, impl=fused, size=tiny): sweeps" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert len(rows) == 6
    assert rows["batch=16 threads=2"].rstrip(" │").endswith("front · recommended")
    assert rows["batch=8 threads=2"].rstrip(" │").endswith("dominated-not-significantly · default")
    assert rows["batch=8 threads=1"].rstrip(" │").endswith("dominated")
    # the saving is the analysis's, against the baseline given: E saves about 2% over B,
    # significantly once paired by round although their own intervals overlap
    rows_r1 = make_rows("r1")
    (group,) = analyse(rows_r1, run_record(rows_r1), baseline={"threads": 2}).groups
    s = group.recommended.saving
    assert 0 < s.low < s.median < 0.05 and s.significant
    assert (
        "recommended batch=16 threads=2 by max_slowdown=1.1; against the default batch=8 "
        f"threads=2 (--baseline): saving in energy_per_token {100 * s.median:+.1f}% "
        f"[{100 * s.low:+.1f}%, {100 * s.high:+.1f}%] (significant); slowdown in time_per_token"
    ) in out
    e = rows["batch=16 threads=2"].split("│")
    x = group.recommended.setting.x
    assert e[2].strip() == f"{x.median:.4g} [{x.low:.4g}, {x.high:.4g}]" and e[4].strip() == "5"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "run r2 sweeps no setting"),  # latest
        (["r1", "--y", "nope"], "has no metric 'nope'; valid: co2e_per_1k_tokens, energy_per"),
        (["r3", "--eta", "0.5"], "run r3 records neither a RAPL maximum power"),
        (["r1", "--baseline", "threads=9"], "no measured setting has batch=8,threads=9"),
        (["r1", "--baseline", "colour=red"], "unknown knob 'colour'"),
        (["nosuchrun"], "no run 'nosuchrun'"),
    ],
)
def test_cli_errors_are_one_line(db, capsys, argv, message) -> None:
    assert main(["pareto", "--db", str(db), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


# -- the report -------------------------------------------------------------------------


def test_report_shows_the_settings_section_only_for_a_sweep(db, tmp_path) -> None:
    swept = render(db, tmp_path / "swept.html", refs=["r1"])
    html = swept.path.read_text()
    assert "<h2>Energy-optimal settings</h2>" in html and 'href="#settings"' in html
    start = html.index('<section id="settings">')
    section = html[start : html.index("</section>", start)]
    assert "sweeps batch, threads" in section
    assert "Recommended (max_slowdown=1.1): <b>batch=16 threads=2</b>" in section
    assert section.count('class="plotly-graph-div') == 1
    assert section.count("<tr><td>batch=") == 3  # the front: three settings
    rows = make_rows("r1")
    chosen = analyse(rows, run_record(rows)).groups[0].recommended
    assert f"saving {100 * chosen.saving.median:+.1f}% (" in section
    assert html.count('class="plotly-graph-div') == swept.figures
    plain = render(db, tmp_path / "plain.html", refs=["r2"])
    text = plain.path.read_text()
    assert "Energy-optimal settings" not in text and 'id="settings"' not in text
    assert swept.figures == 5 + 6 + 1 and plain.figures == 5 + 1  # compared, timelines, front
