"""What measuring in supervised worker processes costs, against one process doing it all.

For the smoke suite (or the cases ``--arch``/``--phase`` select), prints:
  worker start s        a worker with nothing to measure: process start, imports (torch and
                        what the cases' workloads import), sensor detection, reporting ready
                        (median of --starts tries)
  in-process s          one round of the cases in this process (carbonbench.execution.runner.Runner)
  supervised s          one round through the supervisor: one worker, the same cases
  overhead s / round    supervised - in-process: what each round adds
  overhead %            of the in-process round
Warm-up runs in every round either way (each round measures its cases from cold), so the
overhead is the process itself. The idle baseline is switched off in both to compare the rounds.

    python benchmarks/supervisor_overhead.py [--arch gpt --phase train] [--starts 5] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import detect_sensors
from carbonbench.execution.protocol import Job
from carbonbench.execution.runner import Runner, RunOptions, new_run_id
from carbonbench.execution.supervisor import WORKER, Supervisor
from carbonbench.results.store import Store
from carbonbench.suites.suite import load, narrow


def worker_start(tmp: Path, suite, carbon) -> float:
    """Seconds from spawning a worker with no cases to its exit."""
    db = tmp / "start.sqlite"
    Store(db).close()
    job = Job(
        db=str(db),
        run_id="start",
        round=0,
        cases=[],
        suite_text=suite.text,
        suite_source=suite.source,
        carbon=carbon.to_dict(),
        options=RunOptions().stored(),
        components=["cpu", "memory"],
        idle_w={},
        supervisor_pid=os.getpid(),
    )
    phases = ",".join(sorted({case.phase for case in suite.cases}))
    started = time.perf_counter()
    argv = [*WORKER, "--phases", phases]
    subprocess.run(argv, input=job.to_line(), text=True, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append")
    parser.add_argument("--phase", action="append")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    suite = narrow(load("smoke"), arch=args.arch, phase=args.phase)
    suite = dataclasses.replace(
        suite, measure=dataclasses.replace(suite.measure, idle_baseline_s=0)
    )
    carbon = resolve(intensity=100.0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        starts = [worker_start(tmp, suite, carbon) for _ in range(args.starts)]
        started = time.perf_counter()
        with Store(tmp / "a.sqlite") as store, EnergyMeter(detect_sensors().sensors) as meter:
            Runner(suite, store, meter, carbon).run()
        in_process = time.perf_counter() - started
        started = time.perf_counter()
        options = RunOptions(rounds=1)
        Supervisor(suite, tmp / "b.sqlite", carbon, options, run_id=new_run_id()).run()
        supervised = time.perf_counter() - started
    result = {
        "cases": len(suite.cases),
        "worker_start_s": statistics.median(starts),
        "in_process_s": in_process,
        "supervised_s": supervised,
        "overhead_s_per_round": supervised - in_process,
        "overhead_percent": 100 * (supervised - in_process) / in_process,
        "python": sys.version.split()[0],
        "logical_cpus": os.cpu_count(),
    }
    table = Table(title=f"Supervised worker vs one process ({len(suite.cases)} cases, one round)")
    for column in ("worker start s", "in-process s", "supervised s", "overhead s", "overhead %"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{result['worker_start_s']:.2f}",
        f"{in_process:.1f}",
        f"{supervised:.1f}",
        f"{result['overhead_s_per_round']:.1f}",
        f"{result['overhead_percent']:.0f}%",
    )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
