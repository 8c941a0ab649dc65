"""The devices a suite asks for, checked against NVML (patched: no GPU on the test machines)
before a run stores anything."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import pynvml
import pytest

from carbonbench.cli import main
from carbonbench.energy.devices import check_devices, cuda_device_count
from carbonbench.errors import InputError
from carbonbench.suites.suite import load
from tests.test_nvml import FakeGpu, FakeNvml


@pytest.fixture
def nvml(monkeypatch) -> FakeNvml:
    """Two GPUs, CUDA_VISIBLE_DEVICES unset; tests change either."""
    fake = FakeNvml([FakeGpu("GPU-aaaa-1111"), FakeGpu("GPU-bbbb-2222")])
    fake.install(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


@pytest.fixture
def no_gpu(monkeypatch, nvml: FakeNvml) -> FakeNvml:
    """NVML cannot start: no driver, as on the CPU machines the tests run on."""
    nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    return nvml


@pytest.mark.parametrize(
    ("visible", "count"),
    [
        (None, 2),
        ("1", 1),
        ("0,1", 2),
        ("1,0", 2),
        ("GPU-bbbb", 1),
        ("GPU-aaaa,GPU-bbbb", 2),
        ("", 0),
        ("7", 0),  # names no GPU: CUDA stops there
        ("0,7,1", 1),
        ("GPU-cccc", 0),
    ],
)
def test_the_count_honours_cuda_visible_devices(
    monkeypatch, nvml: FakeNvml, visible: str | None, count: int
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cuda_device_count() == count


def test_no_driver_or_no_binding_counts_none(monkeypatch, no_gpu: FakeNvml) -> None:
    assert cuda_device_count() == 0
    no_gpu.init_error = None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert cuda_device_count() == 0


def test_an_nvml_error_after_init_counts_none(monkeypatch, nvml: FakeNvml) -> None:
    def broken() -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", broken)
    assert cuda_device_count() == 0


def test_gpus_present_pass(nvml: FakeNvml) -> None:
    check_devices(["cpu", "cuda", "cuda:0", "cuda:1"])


def test_cpu_and_unknown_types_are_never_asked_of_nvml(monkeypatch) -> None:
    def refuse() -> None:
        raise AssertionError("NVML asked")

    monkeypatch.setattr(pynvml, "nvmlInit", refuse)
    check_devices(["cpu", "mps", "xpu:1"])  # mps and xpu need torch to check: let through


def test_a_gpu_index_beyond_the_machine_names_the_ones_it_has(nvml: FakeNvml) -> None:
    with pytest.raises(InputError) as caught:
        check_devices(["cuda:0", "cuda:3"])
    assert str(caught.value).startswith(
        "suite asks for cuda:3 but this machine has 2 CUDA GPUs (cuda:0, cuda:1)"
    )


def test_one_visible_gpu_of_two(monkeypatch, nvml: FakeNvml) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(InputError) as caught:
        check_devices(["cuda:1"])
    message = str(caught.value)
    assert message.startswith("suite asks for cuda:1 but this machine has 1 CUDA GPU (cuda:0, ")
    assert "CUDA_VISIBLE_DEVICES='1'" in message


def test_no_gpu_says_what_to_run_instead(no_gpu: FakeNvml) -> None:
    with pytest.raises(InputError) as caught:
        check_devices(["cuda"])
    assert str(caught.value) == (
        "suite asks for cuda but this machine has no CUDA GPU (NVML found none): run a CPU "
        "suite such as smoke"
    )
    with pytest.raises(InputError, match=r"found none\): run a CPU .*, or give --device cpu$"):
        check_devices(["cpu", "cuda:1"])


def test_gpus_hidden_by_cuda_visible_devices_are_named(monkeypatch, nvml: FakeNvml) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(InputError, match=r"CUDA_VISIBLE_DEVICES='' hides the 2 NVML found"):
        check_devices(["cuda"])


def test_the_gpu_suite_on_a_cpu_machine_is_refused_before_anything_is_stored(
    tmp_path, capsys, no_gpu: FakeNvml
) -> None:
    db = tmp_path / "never.sqlite"
    assert main(["run", "--suite", "gpu", "--db", str(db)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("carbonbench: error: suite asks for cuda but this machine has no CUDA")
    assert "\n" not in err and "Traceback" not in err
    if db.exists():  # nothing stored: no run, no row
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_a_resumed_run_is_checked_too(monkeypatch, capsys, no_gpu: FakeNvml) -> None:
    import carbonbench.execution.resume as resume

    plan = SimpleNamespace(suite=load("gpu"), run_id="r")
    monkeypatch.setattr(resume, "plan_resume", lambda db, ref: plan)
    assert main(["run", "--resume", "latest"]) == 2
    assert "suite asks for cuda but" in capsys.readouterr().err


def test_checking_devices_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from carbonbench.energy.devices import check_devices\n"
        "from carbonbench.errors import InputError\n"
        "try:\n"
        "    check_devices(['cpu', 'cuda'])\n"
        "except InputError:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
