"""The HTML report: content, escaping, errors, and a real browser rendering it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from carbonbench.cli import main
from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import ModelledCpuSensor, ModelledRamSensor
from carbonbench.execution.runner import Runner, RunOptions
from carbonbench.reports.html import render
from carbonbench.results.store import Store, StoreError
from tests.helpers import fast_suite

LABEL = '<script>alert("label")</script>&'


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """Two runs of a small suite: a label with markup in it, reference and fused variants."""
    path = tmp_path_factory.mktemp("report") / "r.sqlite"
    text = fast_suite(archs=("gpt", "lstm"), phases=("train", "infer")).text
    text = text.replace('impl = ["fused"]', 'impl = ["reference", "fused"]')
    from carbonbench.suites.suite import parse

    suite = parse(text, "fast.toml")
    for label in ("night 1", LABEL):
        store = Store(path)
        with EnergyMeter([ModelledCpuSensor(), ModelledRamSensor()], 0.02) as meter:
            Runner(suite, store, meter, resolve(country="FRA"), RunOptions(label=label)).run()
        store.close()
    return path


def test_report_is_self_contained_and_escaped(store_path, tmp_path) -> None:
    out = render(store_path, tmp_path / "report.html", last=2)
    html = out.path.read_text()
    # compared, reference vs fused, timelines, trends, and the settings' fronts: the suite
    # sweeps impl, so each arch x phase is a group of two settings
    assert out.figures == 5 + 1 + 8 + 1 + 4
    assert html.count("* plotly.js v") == 1  # the library, inlined once
    assert "<script src" not in html  # nothing loaded from elsewhere: works offline
    assert html.count('class="plotly-graph-div') == out.figures
    assert LABEL not in html and "&lt;script&gt;alert(&#34;label&#34;)&lt;/script&gt;&amp;" in html
    for section in (
        "Summary",
        "Architectures compared",
        "Power timelines",
        "Nightly trends",
        "Provenance",
        "Methodology",
    ):
        assert f"<h2>{section}</h2>" in html
    assert "France grid average" in html and "modelled" in html
    assert "<h2>Projection</h2>" in html and "1 B parameters on 20 B tokens" in html
    assert out.bytes < 6e6


def test_report_of_selected_runs(store_path, tmp_path, capsys) -> None:
    out = tmp_path / "one.html"
    assert main(["report", "--db", str(store_path), "--run", "latest~1", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text()
    assert "night 1" in html and "Nightly trends" not in html


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "{tmp}/absent.sqlite"], "no results store at"),
        (["--db", "{tmp}/empty.sqlite"], "holds no runs yet"),
        (["--db", "{store}", "--run", "nosuchrun"], "no run 'nosuchrun'"),
        (["--db", "{store}", "--last", "0"], "--last must be at least 1"),
    ],
)
def test_report_errors_are_one_line(store_path, tmp_path, capsys, argv, message) -> None:
    Store(tmp_path / "empty.sqlite").close()
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{store}", str(store_path)) for a in argv]
    assert main(["report", *argv, "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "x.html").exists()


def test_report_of_a_run_where_every_case_failed(tmp_path) -> None:
    """A GPU suite on a machine without one: the report still renders and says why."""
    path = tmp_path / "r.sqlite"
    suite = fast_suite(archs=("gpt", "lstm"), phases=("train", "infer"), devices=("cuda",))
    with Store(path) as store, EnergyMeter([ModelledCpuSensor()], 0.05) as meter:
        Runner(suite, store, meter, resolve(intensity=100.0)).run()
    out = render(path, tmp_path / "report.html")
    html = out.path.read_text()
    assert "<b>4 failed</b>" in html and "No energy was measured" in html
    assert html.count("torch sees no CUDA GPU") == 4
    assert html.count('class="plotly-graph-div') == out.figures


def test_report_data_errors_raise_store_error(tmp_path) -> None:
    with pytest.raises(StoreError):
        render(tmp_path / "nothing.sqlite", tmp_path / "r.html")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (CI installs it)",
)
def test_report_renders_in_headless_chromium(store_path, tmp_path) -> None:
    assert CHROMIUM is not None, "CI must install chromium (apt-get install chromium)"
    report = render(store_path, tmp_path / "report.html", last=2)
    url = report.path.resolve().as_uri()
    dump = subprocess.run(
        [
            CHROMIUM,
            *HEADLESS,
            f"--user-data-dir={tmp_path / 'p1'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2400",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], "the page logged to the console"
    plots = dump.stdout.split('class="plotly-graph-div')[1:]
    assert len(plots) == report.figures
    for plot in plots:  # every figure was drawn: plotly put its SVG in the div
        assert re.search(r'class="main-svg"', plot.split('class="plotly-graph-div')[0])
    # the charts side by side take their column's width, all alike (one sized before the grid
    # settled used to overflow and hide half its bars)
    charts = dump.stdout.split('class="grid2"')[1].split('class="plotly-graph-div')[1:5]
    widths = {int(w) for c in charts for w in re.findall(r'class="main-svg"[^>]*width="(\d+)"', c)}
    assert len(widths) == 1 and widths.pop() < 700, widths
    # the log axis of parameters is labelled within a decade too
    scatter = charts[3]
    assert "Energy against parameter count" in scatter
    assert len(re.findall(r'class="xtick"', scatter)) >= 2
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *HEADLESS,
            f"--user-data-dir={tmp_path / 'p2'}",
            "--window-size=1300,2400",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("CARBONBENCH_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")


def test_energy_by_method_leaves_overlapping_domains_out() -> None:
    import pandas as pd

    from carbonbench.reports.data import energy_by_method

    rows = pd.DataFrame(
        [
            {
                "energy_by_domain": {"cpu:package-0": 30.0, "cpu:psys": 90.0, "ram:modelled": 2.0},
                "method_by_domain": {
                    "cpu:package-0": "counter",
                    "cpu:psys": "counter",
                    "ram:modelled": "modelled",
                },
                "additive_by_domain": {
                    "cpu:package-0": True,
                    "cpu:psys": False,
                    "ram:modelled": True,
                },
            },
            {
                "energy_by_domain": {"gpu:0": 100.0},
                "method_by_domain": {"gpu:0": "power-sampled"},
                "additive_by_domain": {"gpu:0": True},
            },
        ]
    )
    assert energy_by_method(rows) == {"counter": 30.0, "modelled": 2.0, "power-sampled": 100.0}
