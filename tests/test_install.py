"""The package as a user installs it: a wheel in a fresh virtual environment, beside a project
that has its own ``bench``, ``models`` and ``reports`` packages (as ML projects often do).

Only ``carbonbench`` may be installed; the project's packages stay the project's, its pytest
run loads carbonbench's plugin without trouble, and ``carbonbench`` and ``python -m
carbonbench`` work from inside it. The wheel's dependencies come from this environment (a
path file), so the test does not download them again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = (
    ".git",
    ".nox",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "carbonbench-results",
)

USER_TEST = """
import importlib.util
import os

import bench
import models
import reports

import carbonbench


def test_the_projects_packages_are_its_own():
    assert (bench.OWNER, models.OWNER, reports.OWNER) == ("user",) * 3
    assert carbonbench.__file__.startswith(os.environ["FRESH_VENV"])
    assert importlib.util.find_spec("carbonbench.models").origin.startswith(
        os.environ["FRESH_VENV"]
    )


def test_energy_benchmark_fixture_works_here(energy_benchmark):
    assert energy_benchmark(lambda: sum(range(1000)), units=1000, rounds=2) == 499500
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_wheel_installs_beside_a_project_with_bench_models_and_reports(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # build from a copy of the sources: a build/ folder left in the checkout would add stale files
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LOCAL))
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        tmp_path,
        env,
    )
    (wheel,) = dist.glob("carbonbench-*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"carbonbench"}
    names = zipfile.ZipFile(wheel).namelist()
    for packaged in (
        "carbonbench/suites/smoke.toml",
        "carbonbench/reports/templates/report.html.j2",
        "carbonbench/models/registry.py",
        "carbonbench/cli/run.py",
        "carbonbench/energy/sensors/nvml.py",
    ):
        assert packaged in names

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            env,
        ).stdout.strip()
    )
    # the dependencies (torch, pandas, pytest, ...) from this environment, after the venv's own
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path,
        env,
    )

    project = tmp_path / "project"
    for package in ("bench", "models", "reports"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text('OWNER = "user"\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_user.py").write_text(textwrap.dedent(USER_TEST))
    env = env | {"FRESH_VENV": str(venv), "CARBONBENCH_POWERCAP_ROOT": str(tmp_path / "none")}
    done = _run(
        [
            str(python),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--carbonbench-min-round-s=0.05",
            "--benchmark-disable-gc",
        ],
        project,
        env,
    )
    assert "2 passed" in done.stdout

    for command in ([str(venv / "bin" / "carbonbench")], [str(python), "-m", "carbonbench"]):
        listing = _run([*command, "models", "--json"], project, env).stdout
        assert '"arch": "gpt"' in listing and '"arch": "seq2seq-lstm"' in listing
