"""GPU settings (power limit, locked SM clock): refused before a run when they cannot be made,
made around each case, and always put back: after the case, after an error in it, and by the
supervisor after a worker killed between the change and its undoing.

Only the hardware is fake: pynvml's functions are replaced by tests/examples/fake_gpu.py's,
which keep one GPU in a JSON file, so the supervisor (this process) and its workers (through a
sitecustomize.py on their PYTHONPATH) see the same device."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pynvml
import pytest

from carbonbench.cli import main
from carbonbench.energy import controls
from carbonbench.energy.controls import CONTROLS, Changes, SettingError
from carbonbench.energy.sensors import NvmlSensor
from carbonbench.errors import InputError
from carbonbench.execution import settings
from carbonbench.execution.coordination import CaseFailed
from carbonbench.execution.protocol import DeviceChange, DeviceRestored
from carbonbench.execution.runner import CaseRunner
from carbonbench.results.store import Store
from carbonbench.suites.case import DEVICE_KNOBS, Case
from carbonbench.suites.suite import parse
from tests.examples import fake_gpu
from tests.helpers import FAST, run
from tests.test_supervisor import REPO, supervise

NAME = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One fake GPU (700 W limit, 200-700 W; SM clocks 345-1980 MHz), in this process and in
    every process it starts; its state file's path."""
    state = fake_gpu.write_state(tmp_path / "gpu.json")
    for name, value in fake_gpu.env(tmp_path / "site", state).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpu.install(lambda name, function: monkeypatch.setattr(pynvml, name, function))
    return state


def change_state(path: Path, **changes: object) -> None:
    fake_gpu.write_state(path, **{**fake_gpu.read_state(path), **changes})


def limit_mw(path: Path) -> int:
    return fake_gpu.read_state(path)["gpus"][0]["limit_mw"]


def sets(path: Path) -> list[list]:
    return fake_gpu.read_state(path)["log"]


def case(device: str = "cuda", **knobs: int) -> Case:
    return Case("rnn", "tiny", "fused", "train", 2, 8, device, "float32", **knobs)


def gpu_suite(*, rounds: int = 1, knob: str = "power_limit_w = [300]", cpu_too: bool = True):
    """The fast suite on the (fake) GPU with one setting, and a CPU case beside it."""
    devices = '["cuda", "cpu"]' if cpu_too else '["cuda"]'
    text = FAST.format(
        archs='["rnn"]',
        phases='["train"]',
        devices=devices,
        impls='["fused"]',
        rounds=rounds,
        grace=60,
        timeout=60,
        target=6.0,
        max_steps=400,
    ).replace("\n[measure]", f"{knob}\n\n[measure]")
    return parse(text, "gpu-settings.toml")


# -- checked before a run ---------------------------------------------------------------------


def test_there_is_one_control_per_device_knob() -> None:
    assert set(CONTROLS) == set(DEVICE_KNOBS)


def test_a_power_limit_outside_the_range_is_one_line_naming_it(gpu: Path) -> None:
    with pytest.raises(InputError) as caught:
        controls.check([case(power_limit_w=300), case(power_limit_w=50)])
    assert str(caught.value) == (
        f"power_limit_w = 50 is outside cuda:0's range 200-700 W ({NAME}): give a value in it"
    )
    assert limit_mw(gpu) == 700_000


def test_an_sm_clock_outside_the_range_is_one_line_naming_it(gpu: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SettingError) as caught:
        controls.check([case(sm_clock_mhz=3000)])
    assert str(caught.value) == (
        f"sm_clock_mhz = 3000 is outside cuda:0's range 345-1980 MHz ({NAME}): give a value in it"
    )
    change_state(gpu, gpus=[{**fake_gpu.read_state(gpu)["gpus"][0], "memory_mhz": []}])
    with pytest.raises(SettingError, match=r"range up to 1980 MHz \("):  # no list: the maximum
        controls.check([case(sm_clock_mhz=3000)])
    controls.check([case(sm_clock_mhz=1410)])
    assert fake_gpu.read_state(gpu)["gpus"][0]["locked"] is None  # checking changes nothing


def test_no_permission_is_one_line_naming_the_fix(gpu: Path, monkeypatch) -> None:
    change_state(gpu, permitted=False)
    with pytest.raises(SettingError) as caught:
        controls.check([case(power_limit_w=300)])
    assert str(caught.value) == (
        "setting a GPU's power limit needs root: run with sudo, or remove power_limit_w from "
        "the suite's matrix"
    )
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SettingError) as caught:
        controls.check([case(sm_clock_mhz=1410)])
    assert str(caught.value) == (
        "locking a GPU's SM clock needs root: run with sudo, or remove sm_clock_mhz from the "
        "suite's matrix"
    )


def test_a_gpu_that_does_not_support_it_is_one_line(gpu: Path) -> None:
    change_state(gpu, supported=False)
    with pytest.raises(SettingError) as caught:
        controls.check([case(power_limit_w=300)])
    assert str(caught.value) == (
        f"cuda:0 ({NAME}) does not let NVML change its power limit: remove power_limit_w from "
        "the suite's matrix"
    )


def test_a_check_that_passes_changes_nothing(gpu: Path) -> None:
    controls.check([case(power_limit_w=300), case(power_limit_w=700), case("cpu")])
    assert limit_mw(gpu) == 700_000
    assert [value for _, _, value in sets(gpu)] == [700_000]  # the probe: the limit to itself


def test_cases_without_gpu_settings_never_start_nvml(monkeypatch) -> None:
    def refuse() -> None:
        raise AssertionError("NVML started")

    monkeypatch.setattr(pynvml, "nvmlInit", refuse)
    controls.check([case(), case("cpu"), case(threads=2)])
    with settings.applied(case("cpu", threads=1)):
        pass


def test_without_nvml_a_gpu_setting_is_refused_in_one_line(monkeypatch) -> None:
    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    with pytest.raises(SettingError, match=r"^GPU settings need NVML, which could not start"):
        controls.check([case(power_limit_w=300)])


def test_a_refused_setting_stops_the_run_before_anything_is_stored(
    gpu: Path, tmp_path: Path, capsys
) -> None:
    suite_file, db = tmp_path / "s.toml", tmp_path / "never.sqlite"
    suite_file.write_text(gpu_suite(knob="power_limit_w = [300, 900]").text)
    assert main(["run", "--suite", str(suite_file), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "carbonbench: error: power_limit_w = 900 is outside cuda:0's range 200-700 W "
        f"({NAME}): give a value in it"
    )
    change_state(gpu, permitted=False)
    assert main(["run", "--suite", str(suite_file), "--db", str(db)]) == 2
    assert "power limit needs root: run with sudo" in capsys.readouterr().err
    if db.exists():  # nothing stored
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert limit_mw(gpu) == 700_000


# -- made and put back in the process that measures -----------------------------------------


def test_a_power_limit_is_declared_then_set_for_the_case_and_put_back(gpu: Path) -> None:
    events: list = []
    with settings.applied(case(power_limit_w=300), events.append):
        assert limit_mw(gpu) == 300_000
        (declared,) = events
    assert limit_mw(gpu) == 700_000
    assert isinstance(declared, DeviceChange) and not isinstance(declared, DeviceRestored)
    assert (declared.device, declared.knob, declared.unit) == ("cuda:0", "power_limit_w", "mW")
    assert (declared.original, declared.value, declared.uuid) == (
        700_000,
        300_000,
        "GPU-f4ce0000-0000",
    )
    assert isinstance(events[1], DeviceRestored) and events[1].change == declared.change


def test_an_sm_clock_is_locked_for_the_case_and_reset(gpu: Path) -> None:
    events: list = []
    with settings.applied(case(sm_clock_mhz=1410), events.append):
        assert fake_gpu.read_state(gpu)["gpus"][0]["locked"] == [1410, 1410]
    assert fake_gpu.read_state(gpu)["gpus"][0]["locked"] is None
    assert [type(e) for e in events] == [DeviceChange, DeviceRestored]
    assert events[0].original is None  # NVML cannot read locked clocks: put back by a reset


def test_an_error_in_the_case_still_puts_the_setting_back(gpu: Path) -> None:
    events: list = []
    with pytest.raises(KeyboardInterrupt), settings.applied(case(power_limit_w=250), events.append):
        raise KeyboardInterrupt  # a second Ctrl-C
    assert limit_mw(gpu) == 700_000 and isinstance(events[-1], DeviceRestored)


def test_a_setting_refused_at_run_time_fails_the_case_in_one_line(gpu: Path) -> None:
    change_state(gpu, permitted=False)
    events: list = []
    with (
        pytest.raises(CaseFailed) as caught,
        settings.applied(case(power_limit_w=300), events.append),
    ):
        pytest.fail("the case ran without its setting")
    assert str(caught.value).startswith("setting a GPU's power limit needs root")
    assert [type(e) for e in events] == [DeviceChange, DeviceRestored]  # nothing changed
    with (
        pytest.raises(CaseFailed, match="outside cuda:0's range"),
        settings.applied(case(power_limit_w=50)),
    ):
        pass


def test_the_in_process_runner_puts_settings_back_and_records_them(gpu: Path, tmp_path) -> None:
    suite = gpu_suite()
    events: list = []
    status, runner, store = run(suite, tmp_path, on_event=events.append)
    assert status in ("failed", "ok")  # failed where torch sees no CUDA GPU
    assert limit_mw(gpu) == 700_000
    assert [type(e) for e in events if isinstance(e, DeviceChange | DeviceRestored)] == [
        DeviceChange,
        DeviceRestored,
    ]
    (record,) = store.run(runner.run_id).metadata.device_changes
    assert record["device"] == "cuda:0" and record["knob"] == "power_limit_w"
    assert record["original"] == 700_000 and record["values"] == [300_000]
    assert record["put_back_by"] == "case"
    store.close()


def test_a_second_signal_in_the_runner_puts_settings_back(gpu: Path, tmp_path, monkeypatch) -> None:
    def interrupted(self, case, round, started):
        assert limit_mw(gpu) == 300_000
        raise KeyboardInterrupt("SIGINT")

    monkeypatch.setattr(CaseRunner, "_run_case", interrupted)
    status, _, store = run(gpu_suite(cpu_too=False), tmp_path)
    assert status == "interrupted" and limit_mw(gpu) == 700_000
    store.close()


def test_the_nvml_sensor_records_each_gpus_maximum_power(gpu: Path) -> None:
    sensor = NvmlSensor()
    assert sensor.metadata()["max_power_w"] == {"gpu:0": 700.0}
    sensor.close()


# -- the ledger: first originals, failures said ----------------------------------------------


def test_the_first_original_declared_is_the_one_put_back(gpu: Path) -> None:
    changes = Changes()
    first = controls.Change(
        "cuda:0", 0, "GPU-f4ce0000-0000", NAME, "power_limit_w", "mW", 700_000, 300_000
    )
    changes.declared(first)
    change_state(gpu, gpus=[{**fake_gpu.read_state(gpu)["gpus"][0], "limit_mw": 300_000}])
    # a worker started after a killed one reads what that one left as its original
    changes.declared(controls.Change(**{**first.__dict__, "original": 300_000, "value": 250_000}))
    changes.put_back()
    assert limit_mw(gpu) == 700_000 and not changes.out
    (record,) = changes.record()
    assert record["values"] == [300_000, 250_000] and record["put_back_by"] == "supervisor"
    before = len(sets(gpu))
    changes.put_back(every=True)  # again: already back, so only read
    assert len(sets(gpu)) == before


def test_a_failure_to_put_back_is_a_loud_line_with_the_command(gpu: Path, capsys) -> None:
    changes = Changes()
    changes.declared(
        controls.Change(
            "cuda:0", 0, "GPU-f4ce0000-0000", NAME, "power_limit_w", "mW", 700_000, 300_000
        )
    )
    change_state(gpu, gpus=[{**fake_gpu.read_state(gpu)["gpus"][0], "limit_mw": 300_000}])
    change_state(gpu, permitted=False)
    changes.put_back()  # never raises
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("carbonbench: warning: could not put cuda:0's (NVIDIA H100")
    assert "power limit (power_limit_w) back" in line
    assert line.endswith("run `sudo nvidia-smi -i 0 -pl 700`")
    assert changes.out and changes.record()[0]["put_back_by"] is None


# -- put back by the supervisor, whatever becomes of the worker ------------------------------


def test_a_worker_killed_between_set_and_restore_is_put_right_by_the_supervisor(
    gpu: Path, tmp_path: Path
) -> None:
    """The fake GPU SIGKILLs the worker right after it sets 300 W (before torch touches
    CUDA, which this machine lacks); the supervisor, which kept the declaration, puts the
    700 W back."""
    change_state(gpu, die_on_set_to=300_000)
    suite = gpu_suite()
    status, run, rows, events = supervise(suite, tmp_path)
    assert status == "failed" and limit_mw(gpu) == 700_000
    (worker_set, supervisor_set) = sets(gpu)
    assert worker_set[1:] == ["nvmlDeviceSetPowerManagementLimit", 300_000]
    assert supervisor_set == [os.getpid(), "nvmlDeviceSetPowerManagementLimit", 700_000]
    assert worker_set[0] != os.getpid()
    (failed,) = [r for r in rows if r.status == "failed"]
    assert failed.device == "cuda" and "killed by SIGKILL" in failed.error
    assert [r.status for r in rows if r.device == "cpu"] == ["ok", "ok"]  # the suite went on
    assert any(isinstance(e, DeviceChange) for e in events)
    (record,) = run.metadata.device_changes
    assert record["put_back_by"] == "supervisor" and record["original"] == 700_000


def recorded(db: Path) -> list[dict]:
    """The GPU settings a (running) run's record says it changed."""
    try:
        with Store(db, create=False, readonly=True) as store:
            return [c for run in store.runs() for c in run.metadata.device_changes]
    except Exception:  # not yet created
        return []


def test_a_supervisor_stopped_by_signals_puts_settings_back(gpu: Path, tmp_path: Path) -> None:
    """`carbonbench run` (a process, with the checks before it) whose worker hangs right after
    setting 300 W: Ctrl-C, then Ctrl-C again (the worker is killed), and the limit is back."""
    change_state(gpu, hang_on_set_to=300_000)
    suite_file, db = tmp_path / "s.toml", tmp_path / "cli.sqlite"
    suite_file.write_text(gpu_suite(cpu_too=False).text)
    command = [sys.executable, "-m", "carbonbench", "run", "--suite", str(suite_file)]
    proc = subprocess.Popen(
        [*command, "--db", str(db)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 90
    while limit_mw(gpu) != 300_000:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    while not recorded(db):  # in the run's record before the case ends, should it never
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out.decode()
    assert limit_mw(gpu) == 700_000
    with Store(db, create=False) as store:
        (stored,) = store.runs()
    assert stored.status == "interrupted"
    (record,) = stored.metadata.device_changes
    assert record["put_back_by"] == "supervisor"


ORPHAN = """
import io, os, pynvml
from carbonbench.energy.controls import Change
from carbonbench.execution.protocol import DeviceChange, Idle
from carbonbench.execution.worker import Events

events = Events(io.StringIO(), supervisor_pid=os.getppid())
change = Change("cuda:0", 0, "GPU-f4ce0000-0000", "x", "power_limit_w", "mW", 700000, 300000)
events.send(DeviceChange.of(change))
pynvml.nvmlDeviceSetPowerManagementLimit(0, 300000)
events.supervisor_pid = os.getppid() + 1  # as if the supervisor had gone
events.send(Idle(1.0))
raise SystemExit("still running")
"""


def test_a_worker_whose_supervisor_has_gone_puts_settings_back_before_it_ends(gpu: Path) -> None:
    done = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert limit_mw(gpu) == 700_000
