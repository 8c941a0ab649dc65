"""Size and build time of the HTML report, for the smoke suite and for a long history.

1. The smoke suite, run for real on this machine into a temporary store, then its report.
   Target: at most 6 MB, built in at most 5 s.
2. A store of 50 nightly runs x 30 cases x 5 repeats (synthetic rows shaped like real ones:
   200-point timelines on two domains, warm-up records), then a report of all 50 runs.
   Target: at most 15 MB, built in at most 20 s.

    python benchmarks/report_speed.py [--skip-smoke]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from carbonbench.reports.html import render
from carbonbench.results.store import ResultRow, Store

ARCHS = ("rnn", "lstm", "gru", "transformer", "seq2seq-lstm", "gpt")
PHASES = ("train", "infer", "prefill", "decode", "train-to-target")


def synthetic_history(path: Path, nights: int = 50, repeats: int = 5) -> int:
    rng = np.random.default_rng(0)
    rows = 0
    t = np.linspace(0, 5, 200).tolist()
    with Store(path) as store:
        for night in range(nights):
            run_id = f"night-{night:03d}"
            store.begin_run(
                run_id,
                label=f"night {night}",
                suite_name="nightly",
                suite_source="builtin",
                suite_text="",
                started_at=f"2026-10-{1 + night % 28:02d}T02:00:{night % 60:02d}",
                metadata={
                    "host": "gpu-01",
                    "cpu": "x",
                    "gpus": ["H100"],
                    "git_commit": f"{night:040x}",
                    "versions": {},
                    "sensors": {},
                    "carbon": {
                        "intensity_g_per_kwh": 369.0,
                        "source": "USA",
                        "pue": 1.2,
                        "pue_source": "given",
                    },
                },
            )
            for arch in ARCHS:
                for phase in PHASES:
                    base = 1e-3 * (1 + ARCHS.index(arch)) * (1 + PHASES.index(phase))
                    for repeat in range(repeats if phase != "train-to-target" else 1):
                        joules = base * 4096 * (1 + 0.02 * rng.standard_normal())
                        watts = (300 + 20 * rng.standard_normal(200)).tolist()
                        store.add_row(
                            ResultRow(
                                run_id=run_id,
                                case_id=f"{arch}/base/fused/{phase}",
                                repeat=repeat,
                                arch=arch,
                                size="base",
                                impl="fused",
                                phase=phase,
                                device="cuda",
                                dtype="bfloat16",
                                batch=32,
                                seq_len=128,
                                params=10**8,
                                steps=10,
                                samples=320,
                                tokens=4096,
                                flops=10**15,
                                duration_s=5.0,
                                energy_j=joules,
                                energy_by_domain={
                                    "gpu:0": 0.9 * joules,
                                    "cpu:package-0": 0.1 * joules,
                                },
                                method_by_domain={"gpu:0": "counter", "cpu:package-0": "counter"},
                                kwh=joules / 3.6e6,
                                co2e_g=joules / 3.6e6 * 369,
                                pue=1.2,
                                reached_target=True if phase == "train-to-target" else None,
                                timeline={
                                    "t": t,
                                    "watts": {"gpu:0": watts, "cpu:package-0": watts},
                                },
                                extra={
                                    "warmup": {
                                        "steps": 3,
                                        "duration_s": 1.0,
                                        "energy_j": 1.0,
                                        "timeline": {
                                            "t": t[:40],
                                            "watts": {
                                                "gpu:0": watts[:40],
                                                "cpu:package-0": watts[:40],
                                            },
                                        },
                                    }
                                }
                                if repeat == 0
                                else {},
                            )
                        )
                        rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-smoke", action="store_true")
    args = parser.parse_args()
    table = Table(title="HTML report: size and build time")
    for column in ("store", "runs", "figures", "size MB", "build s", "target"):
        table.add_column(column, justify="left" if column in ("store", "target") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_smoke:
            db = Path(tmp) / "smoke.sqlite"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench",
                    "run",
                    "--suite",
                    "smoke",
                    "--db",
                    str(db),
                    "--json",
                ],
                check=True,
                capture_output=True,
            )
            out = render(db, Path(tmp) / "smoke.html")
            table.add_row(
                "smoke suite, run here",
                "1",
                str(out.figures),
                f"{out.bytes / 1e6:.2f}",
                f"{out.seconds:.2f}",
                "<= 6 MB, <= 5 s",
            )
        db = Path(tmp) / "history.sqlite"
        started = time.perf_counter()
        rows = synthetic_history(db)
        Console().print(f"wrote {rows} synthetic rows in {time.perf_counter() - started:.1f} s")
        out = render(db, Path(tmp) / "history.html", last=50)
        table.add_row(
            "50 nights x 30 cases",
            "50",
            str(out.figures),
            f"{out.bytes / 1e6:.2f}",
            f"{out.seconds:.2f}",
            "<= 15 MB, <= 20 s",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
