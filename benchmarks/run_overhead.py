"""Where a run's time goes: what it measures against what it costs around that.

For each kind of run, the median of ``--runs`` real ``carbonbench run`` commands (fresh
processes, as users and ``ab`` start them), split from the stored rows and the wall clock:

  wall s      the command, start to exit
  windows s   the measured windows (sum of the ok rows' durations)
  warm-up s   the warm-up steps before them (every case, every round)
  idle s      the idle baseline (the suite's idle_baseline_s, where the run measured it)
  load s      the run waited for its workers to load (torch, torch._dynamo for training),
              beyond what its own set-up overlapped (the run's ``worker_wait_s``)
  rest s      wall - windows - warm-up - idle - load: the rest of the overhead (the command's
              start, sensors, model builds, FLOP counting, the store)
  short       ok windows shorter than the suite's min_window_s

Runs: ``two-train`` (one round of two tiny training cases, two 0.5 s windows each, no idle
baseline), once into a fresh store (``cold``: FLOPs counted) and once into a store that has
run it before (``warm``: FLOP counts from the store); ``smoke`` (one round of the smoke
suite, three into one store: the first counts FLOPs, the median run reuses them, as a nightly
does); with ``--smoke-suite N``, N whole smoke runs (its 5 rounds, each into a fresh store,
as ``nox -s smoke`` runs it). Then, with ``--ab N``, the wall time of N ``carbonbench ab``
A/A comparisons of the gate calibration's two cases (benchmarks/gate_calibration.toml), with
their pairs.

With ``--against DIR``, the cold ``two-train`` run of another carbonbench, installed in DIR
(``pip install --no-deps --target DIR <checkout of an older commit>``), interleaved with this
one, one run of each at a time (the machine's speed drifts over minutes): wall, measured windows
and wall - windows, the overhead as everything but the windows, read from the stores with
sqlite3 so that any schema's store will do.

    python benchmarks/run_overhead.py [--runs 3] [--ab 1] [--skip-smoke] [--smoke-suite N]
                                      [--against DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carbonbench.results.store import Store
from carbonbench.suites.suite import parse

HERE = Path(__file__).resolve().parent
CARBONBENCH = [sys.executable, "-m", "carbonbench"]
TWO_TRAIN = """
[suite]
name = "two-train"

[matrix]
arch = ["gpt", "lstm"]
size = ["tiny"]
impl = ["fused"]
phase = ["train"]
batch = [8]
seq_len = [32]
device = ["cpu"]
dtype = ["float32"]

[measure]
rounds = 1
warmup_steps = 2
min_window_s = 0.5
repeats = 2
idle_baseline_s = 0
interval_s = 0.1
case_timeout_s = 60
"""


def one_run(suite: str, db: Path, rounds: int | None = 1) -> dict[str, float]:
    """One ``carbonbench run`` of ``suite`` (``rounds``; None: the suite's) into ``db``,
    taken apart."""
    argv = [*CARBONBENCH, "run", "--suite", suite, "--db", str(db), "--json"]
    argv += ["--rounds", str(rounds)] if rounds is not None else []
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr}")
    run_id = json.loads(result.stdout)["run_id"]
    with Store(db, readonly=True) as store:
        run, rows = store.run(run_id), store.rows(run_id)
    measure = parse(run.suite_text, run.suite_source).measure
    ok = [r for r in rows if r.ok]
    windows = sum(r.duration_s for r in ok)
    warmup = sum(r.extra["warmup"]["duration_s"] for r in ok if "warmup" in r.extra)
    measured_idle = run.metadata.idle_w is not None and run.metadata.idle_source is None
    idle = measure.idle_baseline_s if measured_idle else 0.0
    load = run.metadata.worker_wait_s or 0.0  # None before workers loaded ahead
    return {
        "wall_s": wall,
        "windows_s": windows,
        "warmup_s": warmup,
        "idle_s": idle,
        "load_s": load,
        "rest_s": wall - windows - warmup - idle - load,
        "windows": len(ok),
        "short": sum(r.duration_s < measure.min_window_s for r in ok),
    }


def median_run(name: str, suite: str, runs: int, db_for, rounds=1) -> dict[str, float]:
    parts = [one_run(suite, db_for(i), rounds) for i in range(runs)]
    out = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    out["rest_range"] = [min(p["rest_s"] for p in parts), max(p["rest_s"] for p in parts)]
    print(f"{name}: " + ", ".join(f"{p['wall_s']:.1f} s" for p in parts), file=sys.stderr)
    return out


def ab_comparisons(count: int, folder: Path) -> list[dict[str, float]]:
    out = []
    command = shlex.join(CARBONBENCH)
    for i in range(count):
        db = folder / f"ab-{i}.sqlite"
        argv = [*CARBONBENCH, "ab", "--base", command, "--head", command]
        argv += ["--suite", str(HERE / "gate_calibration.toml"), "--db", str(db), "--json"]
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode not in (0, 1):
            raise SystemExit(f"ab failed ({result.returncode}): {result.stderr[-500:]}")
        verdicts = json.loads(result.stdout)
        pairs = max(v["n_current"] for v in verdicts["verdicts"] if v["noise"] == "pairs")
        out.append({"wall_s": wall, "pairs": pairs, "s_per_pair": wall / pairs})
        print(f"ab {i + 1}/{count}: {wall:.0f} s, {pairs} pairs", file=sys.stderr)
    return out


def against(other: Path, suite: Path, runs: int, folder: Path) -> dict[str, list[float]]:
    """Cold two-train runs of the carbonbench in ``other`` and of this one, interleaved."""
    env = {"this": dict(os.environ), "other": {**os.environ, "PYTHONPATH": str(other)}}
    env["this"].pop("PYTHONPATH", None)
    out: dict[str, list[float]] = {
        f"{side} {what}": [] for side in env for what in ("wall", "overhead")
    }
    for i in range(runs):
        for side in ("other", "this"):
            db = folder / f"{side}-{i}.sqlite"
            argv = [*CARBONBENCH, "run", "--suite", str(suite), "--db", str(db)]
            started = time.perf_counter()
            result = subprocess.run(argv, capture_output=True, text=True, env=env[side])
            wall = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(f"{side}: {shlex.join(argv)} failed: {result.stderr[-500:]}")
            with contextlib.closing(sqlite3.connect(db)) as con:
                (windows,) = con.execute(
                    "SELECT SUM(duration_s) FROM results WHERE status = 'ok'"
                ).fetchone()
            out[f"{side} wall"].append(wall)
            out[f"{side} overhead"].append(wall - windows)
            print(f"{side} {i + 1}/{runs}: {wall:.2f} s, windows {windows:.2f} s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument("--ab", type=int, default=1, help="ab A/A comparisons to time")
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument(
        "--smoke-suite", type=int, default=0, help="also time N whole smoke runs (5 rounds)"
    )
    parser.add_argument(
        "--against", type=Path, help="also time another carbonbench installed in this folder"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite = folder / "two-train.toml"
        suite.write_text(TWO_TRAIN)
        warm = folder / "warm.sqlite"
        one_run(str(suite), warm)  # fills the store's FLOP counts for the warm runs
        figures["two-train cold"] = median_run(
            "two-train cold", str(suite), args.runs, lambda i: folder / f"cold-{i}.sqlite"
        )
        figures["two-train warm"] = median_run(
            "two-train warm", str(suite), args.runs, lambda i: warm
        )
        if not args.skip_smoke:
            figures["smoke round"] = median_run(
                "smoke round", "smoke", args.runs, lambda i: folder / "smoke.sqlite"
            )
        if args.smoke_suite:  # as `nox -s smoke` runs it: a fresh store, FLOPs counted
            figures["smoke suite, 5 rounds"] = median_run(
                "smoke suite",
                "smoke",
                args.smoke_suite,
                lambda i: folder / f"smoke-suite-{i}.sqlite",
                rounds=None,
            )
        comparisons = ab_comparisons(args.ab, folder) if args.ab else []
        other = against(args.against, suite, args.runs, folder) if args.against else None
    table = Table(title=f"runs (one round unless named): median of {args.runs} (seconds)")
    columns = ("run", "wall", "windows", "warm-up", "idle", "load", "rest", "rest range", "short")
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, f in figures.items():
        assert isinstance(f, dict)
        low, high = f["rest_range"]
        table.add_row(
            name,
            f"{f['wall_s']:.1f}",
            f"{f['windows_s']:.1f}",
            f"{f['warmup_s']:.1f}",
            f"{f['idle_s']:.1f}",
            f"{f['load_s']:.1f}",
            f"{f['rest_s']:.1f}",
            f"{low:.1f}-{high:.1f}",
            f"{f['short']:.0f}/{f['windows']:.0f}",
        )
    console = Console()
    console.print(table)
    if comparisons:
        walls = [c["wall_s"] for c in comparisons]
        console.print(
            f"ab A/A, gate calibration's two cases: median {statistics.median(walls):.0f} s "
            f"over {len(walls)} comparison(s) ("
            + ", ".join(f"{c['wall_s']:.0f} s for {c['pairs']:.0f} pairs" for c in comparisons)
            + ")"
        )
        figures["ab"] = comparisons
    if other is not None:
        console.print(
            f"two-train cold, interleaved with {args.against}: median of {args.runs}, "
            "wall (wall - windows): "
            + "; ".join(
                f"{side} {statistics.median(other[side + ' wall']):.2f} s "
                f"({statistics.median(other[side + ' overhead']):.2f} s)"
                for side in ("other", "this")
            )
        )
        figures["against"] = {"folder": str(args.against), **other}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
