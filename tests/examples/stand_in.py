"""A stand-in for ``carbonbench run --json`` in ``carbonbench ab``'s tests: it stores a run of
two cases whose values it is told, in a second, where the real command takes many.

    python -m tests.examples.stand_in [--values 1.0,1.2,...] [--fail CASE] [--exit N] \\
        run ... --db DB --label L --json

The n-th run with label L (counted in the store) has energy and time ``values[n % len]``;
``--fail`` stores CASE as failed; ``--exit N`` exits N at once with a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from carbonbench.results.store import ResultRow, Store

CASES = ("gpt/tiny/train", "gpt/tiny/infer")


def main() -> int:
    own, rest = sys.argv[1:], []
    if "run" in own:
        at = own.index("run")
        own, rest = own[:at], own[at + 1 :]
    parser = argparse.ArgumentParser()
    parser.add_argument("--values", default="1.0")
    parser.add_argument("--fail")
    parser.add_argument("--exit", type=int)
    args = parser.parse_args(own)
    if args.exit is not None:
        print("carbonbench: error: the stand-in was told to fail", file=sys.stderr)
        return args.exit
    run = argparse.ArgumentParser()
    run.add_argument("--db", required=True)
    run.add_argument("--label", required=True)
    run.add_argument("--rounds", type=int)
    run.add_argument("--json", action="store_true")
    options, _ = run.parse_known_args(rest)
    values = [float(v) for v in args.values.split(",")]
    run_id = uuid.uuid4().hex[:8]
    with Store(options.db) as store:
        index = sum(r.label == options.label for r in store.runs())
        store.begin_run(
            run_id,
            label=options.label,
            suite_name="s",
            suite_source="s",
            suite_text="",
            started_at="2026-01-01T00:00:00+00:00",
            metadata={"cpu": "CPU", "gpus": []},
        )
        value = values[index % len(values)]
        for case in CASES:
            failed = case == args.fail
            store.add_row(
                ResultRow(
                    run_id=run_id,
                    repeat=0,
                    case_id=case,
                    arch="gpt",
                    size="tiny",
                    impl="fused",
                    phase=case.rsplit("/", 1)[1],
                    device="cpu",
                    dtype="float32",
                    batch=1,
                    seq_len=8,
                    status="failed" if failed else "ok",
                    error="NaN loss" if failed else None,
                    steps=10,
                    tokens=100,
                    flops=1000,
                    params=50,
                    duration_s=value,
                    energy_j=10 * value,
                    co2e_g=value * 1e-3,
                )
            )
        store.end_run(run_id, "failed" if args.fail else "ok", "2026-01-01T00:01:00+00:00")
    print(json.dumps({"run_id": run_id, "status": "ok"}))
    return 1 if args.fail else 0


if __name__ == "__main__":
    sys.exit(main())
