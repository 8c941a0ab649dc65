"""MLflow without a trainer: ``track(..., mlflow=True)`` and ``measure --mlflow`` log to a real
local MLflow tracking store (a folder under tmp_path, no server), read back with MlflowClient;
the names and limits without MLflow at all."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import carbonbench
from carbonbench.cli import main
from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import Measurement
from carbonbench.energy.sensors import METHODS
from carbonbench.errors import InputError
from carbonbench.integrations.mlflow import MAX_VALUE, metrics, name, tags
from carbonbench.results.store import Store

WHY = "the mlflow extra is not installed"
CARBON = resolve(intensity=400, pue=1.5)


@pytest.fixture
def client(tmp_path, monkeypatch):
    """An MlflowClient of a tracking store of the test's own, which MLflow finds through
    MLFLOW_TRACKING_URI as a user's program would; no run is active before or after."""
    mlflow = pytest.importorskip("mlflow", reason=WHY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    # a folder store: the database stores need sqlalchemy, which mlflow-skinny leaves out
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for variable in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(variable, raising=False)
    assert mlflow.active_run() is None
    yield mlflow.MlflowClient()
    while mlflow.active_run() is not None:  # a failed test's run: not left to the next test
        mlflow.end_run()


def _runs_named(client, run_name: str) -> list:
    return client.search_runs(["0"], filter_string=f"attributes.run_name = '{run_name}'")


def _work() -> None:
    sum(i * i for i in range(200_000))
    time.sleep(0.2)


def test_track_logs_to_the_active_run_and_leaves_it_active(client, tmp_path) -> None:
    import mlflow

    db = tmp_path / "t.sqlite"
    with mlflow.start_run() as run:
        options = {"db": db, "work": 1000, "unit": "token", "carbon": CARBON, "mlflow": True}
        with carbonbench.track("block", **options) as t:
            _work()
        active = mlflow.active_run()
        assert active is not None and active.info.run_id == run.info.run_id
    got = client.get_run(run.info.run_id)
    m = t.measurement
    figures, labels = got.data.metrics, got.data.tags
    assert figures["energy/joules"] == pytest.approx(m.total_energy_j, rel=1e-12)
    assert m.energy_j and all(
        figures[f"energy/joules_{name(d)}"] == pytest.approx(j, rel=1e-12)
        for d, j in m.energy_j.items()
    )
    assert figures["energy/duration_seconds"] == pytest.approx(m.duration_s, rel=1e-12)
    co2e = m.total_energy_j / 3.6e6 * 1.5 * 400
    assert figures["energy/co2e_grams"] == pytest.approx(co2e, rel=1e-9)
    assert figures["energy/joules_per_token"] == pytest.approx(m.total_energy_j / 1000, rel=1e-9)
    assert "energy/dynamic_joules" not in figures  # no idle baseline
    for domain, method in m.method.items():
        assert labels[f"carbonbench.method.{name(domain)}"] == method and method in METHODS
    assert labels["carbonbench.carbon_intensity_g_per_kwh"] == "400"
    assert labels["carbonbench.carbon_intensity_source"] == CARBON.intensity.source
    assert labels["carbonbench.pue"] == "1.5"
    assert labels["carbonbench.version"] == carbonbench.__version__
    assert labels["carbonbench.run_id"] == t.run_id and labels["carbonbench.store"] == str(db)
    assert labels["carbonbench.ended"] == "ok"
    for source, constants in m.constants.items():
        if constants:
            prefix = f"carbonbench.constants.{name(source)}."
            assert any(key.startswith(prefix) for key in labels), source
    with Store(db, create=False) as store:
        (stored,) = store.runs()
    assert stored.run_id == t.run_id


def test_blocks_tracked_in_one_run_log_one_step_each(client) -> None:
    import mlflow

    @carbonbench.track("epoch", db=None, carbon=CARBON, mlflow=True)
    def epoch() -> None:
        _work()

    with mlflow.start_run() as run:
        epoch()
        epoch()
    history = client.get_metric_history(run.info.run_id, "energy/joules")
    assert [point.step for point in history] == [0, 1]
    assert "carbonbench.run_id" not in client.get_run(run.info.run_id).data.tags  # not stored


def test_track_without_an_active_run_starts_one_named_after_the_label_and_ends_it(
    client,
) -> None:
    import mlflow

    with carbonbench.track("prep", db=None, carbon=CARBON, mlflow=True) as t:
        _work()
    assert mlflow.active_run() is None
    (run,) = _runs_named(client, "prep")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["energy/joules"] == pytest.approx(t.measurement.total_energy_j)
    assert run.data.tags["carbonbench.label"] == "prep"

    with (
        pytest.raises(ZeroDivisionError),
        carbonbench.track("bad", db=None, carbon=CARBON, mlflow=True),
    ):
        _ = 1 / 0
    assert mlflow.active_run() is None
    (failed,) = _runs_named(client, "bad")
    assert failed.info.status == "FAILED"  # measured all the same
    assert failed.data.tags["carbonbench.ended"] == "ZeroDivisionError: division by zero"
    assert failed.data.metrics["energy/joules"] >= 0


def test_measure_mlflow_logs_a_new_run_named_after_the_label(client, tmp_path, capsys) -> None:
    db = tmp_path / "m.sqlite"
    code = "import time; time.sleep(0.3)"
    argv = ["measure", "--mlflow", "--label", "x", "--db", str(db), "--work", "10"]
    assert main([*argv, "--carbon-intensity", "400", "--", sys.executable, "-c", code]) == 0
    (run,) = _runs_named(client, "x")
    assert run.info.status == "FINISHED"
    with Store(db, create=False) as store:
        (stored,) = store.runs()
        (row,) = store.rows(stored.run_id)
    figures, labels = run.data.metrics, run.data.tags
    assert figures["energy/joules"] == pytest.approx(row.energy_j, rel=1e-9)
    assert figures["energy/duration_seconds"] >= 0.3 and "energy/joules_per_unit" in figures
    assert labels["carbonbench.run_id"] == stored.run_id and labels["carbonbench.store"] == str(db)
    methods = {
        k.removeprefix("carbonbench.method."): v for k, v in labels.items() if ".method." in k
    }
    assert methods == {name(d): method for d, method in row.method_by_domain.items()}
    assert f"MLflow run {run.info.run_id}" in capsys.readouterr().err


def test_measure_mlflow_logs_to_the_run_of_mlflow_run_id_and_leaves_it_open(
    client, tmp_path, monkeypatch
) -> None:
    run = client.create_run("0")  # as `mlflow run` makes one for a command and names it
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    argv = ["measure", "--mlflow", "--db", str(tmp_path / "r.sqlite"), "--carbon-intensity", "1"]
    assert main([*argv, "--", sys.executable, "-c", "pass"]) == 0
    got = client.get_run(run.info.run_id)
    assert got.info.status == "RUNNING" and "energy/joules" in got.data.metrics
    assert len(client.search_runs(["0"])) == 1  # no new run


def test_a_tracking_store_that_refuses_is_a_warning_and_the_run_is_kept(
    client, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    db = tmp_path / "w.sqlite"
    argv = ["measure", "--mlflow", "--db", str(db), "--carbon-intensity", "1"]
    assert main([*argv, "--", sys.executable, "-c", "exit(4)"]) == 4  # the command's own status
    assert "carbonbench: warning: MLflow did not take the figures" in capsys.readouterr().err
    with Store(db, create=False) as store:
        assert len(store.runs()) == 1


def test_without_mlflow_one_line_names_the_extra_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    with pytest.raises(InputError, match=r"pip install 'carbonbench\[mlflow\]'"):
        carbonbench.track("block", mlflow=True)
    marker = tmp_path / "ran"
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    assert main(["measure", "--mlflow", "--", sys.executable, "-c", code]) == 2
    err = capsys.readouterr().err
    assert "pip install 'carbonbench[mlflow]'" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_names_and_tags_keep_to_mlflow_limits() -> None:
    m = Measurement(
        "x",
        duration_s=2.0,
        energy_j={"cpu:package-0": 10.0, "psys": 12.0},
        method={"cpu:package-0": "counter", "psys": "counter"},
        additive={"cpu:package-0": True, "psys": False},
        idle_w={"cpu:package-0": 1.0, "psys": 1.0},
        constants={
            "modelled-cpu": {"p_max_w": 65, "basis": "x" * 9000, "zones": {"gpu:0": [1, 2]}},
            "rapl": {},
        },
    )
    assert name("cpu:package-0") == "cpu_package-0" and name("img/s") == "img_s"
    assert metrics(m, CARBON, work=4, unit="img/s") == {
        "energy/joules": 10.0,  # psys overlaps the package: not added
        "energy/joules_cpu_package-0": 10.0,
        "energy/joules_psys": 12.0,
        "energy/duration_seconds": 2.0,
        "energy/co2e_grams": pytest.approx(10.0 / 3.6e6 * 1.5 * 400),
        "energy/joules_per_img_s": 2.5,
        "energy/dynamic_joules": 8.0,
    }
    labels = tags(m, CARBON, label="x", run_id="r1", db=Path("a.sqlite"))
    assert labels["carbonbench.method.cpu_package-0"] == "counter"
    assert labels["carbonbench.constants.modelled-cpu.p_max_w"] == "65"
    assert labels["carbonbench.constants.modelled-cpu.zones.gpu_0"] == "[1, 2]"
    basis = labels["carbonbench.constants.modelled-cpu.basis"]
    assert len(basis) == MAX_VALUE and basis.endswith("...")
    assert labels["carbonbench.run_id"] == "r1" and labels["carbonbench.store"] == "a.sqlite"
    assert all(len(key) <= 250 for key in labels)
