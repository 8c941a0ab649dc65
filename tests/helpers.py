"""What several test modules share: a fast suite and a runner over it, stored rows made by
hand, and a fake powercap tree laid out like the kernel's."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from carbonbench.energy.carbon import resolve
from carbonbench.energy.meter import EnergyMeter
from carbonbench.energy.sensors import ModelledCpuSensor, ModelledRamSensor
from carbonbench.execution.runner import Runner
from carbonbench.results.store import ResultRow, Store
from carbonbench.suites.suite import parse

FAST = """
[suite]
name = "fast"

[matrix]
arch = {archs}
phase = {phases}
batch = [2]
seq_len = [8]
device = {devices}
impl = {impls}

[measure]
warmup_steps = 1
min_window_s = 0.05
repeats = 2
idle_baseline_s = 0.1
interval_s = 0.02
case_timeout_s = {timeout}
hang_grace_s = {grace}
rounds = {rounds}
new_tokens = 4

[target]
loss = {target}
eval_every = 2
max_steps = {max_steps}
max_seconds = 30
"""


def fast_suite(
    archs=("gpt",),
    phases=("train",),
    devices=("cpu",),
    timeout=60,
    target=6.0,
    max_steps=400,
    impls=("fused",),
    rounds=1,
    grace=60,
):
    text = FAST.format(
        archs=json.dumps(list(archs)),
        phases=json.dumps(list(phases)),
        devices=json.dumps(list(devices)),
        impls=json.dumps(list(impls)),
        rounds=rounds,
        grace=grace,
        timeout=timeout,
        target=target,
        max_steps=max_steps,
    )
    return parse(text, "fast.toml")


def run(suite, tmp_path, on_event=None):
    store = Store(tmp_path / "r.sqlite")
    with EnergyMeter([ModelledCpuSensor(), ModelledRamSensor()], 0.02) as meter:
        runner = Runner(suite, store, meter, resolve(intensity=400.0), on_event=on_event)
        status = runner.run()
    return status, runner, store


MAX_RANGE_UJ = 5_000_000  # 5 J: small, so a window sees several wrap-arounds


def make_zone(path: Path, name: str, start_uj: int = 0) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{start_uj:020d}\n")
    (path / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
    return path


def make_powercap(root: Path, packages: int = 2, psys: bool = True) -> dict[str, Path]:
    """intel-rapl:N packages with core, uncore and dram subzones, the top-level links to the
    subzones that the kernel also creates, and optionally a psys zone."""
    zones = {}
    for n in range(packages):
        top = make_zone(root / f"intel-rapl:{n}", f"package-{n}", start_uj=1_500_000)
        zones[f"cpu:package-{n}"] = top
        for m, sub in enumerate(("core", "uncore", "dram")):
            path = make_zone(top / f"intel-rapl:{n}:{m}", sub, start_uj=700_000)
            os.symlink(path, root / f"intel-rapl:{n}:{m}")
            if sub == "dram":
                zones[f"cpu:dram-{n}"] = path
            else:
                zones[f"ignored:{sub}-{n}"] = path
    if psys:
        zones["cpu:psys"] = make_zone(root / f"intel-rapl:{packages}", "psys")
    return zones


CASE = {
    "case_id": "gpt/tiny",
    "arch": "gpt",
    "size": "tiny",
    "impl": "fused",
    "phase": "train",
    "device": "cpu",
    "dtype": "float32",
    "batch": 1,
    "seq_len": 8,
}


def row(run_id: str, repeat: int = 0, **values: Any) -> ResultRow:
    """A row of a tiny gpt training case; ``values`` override any field."""
    return ResultRow(**({"run_id": run_id, "repeat": repeat} | CASE | values))


def begin_run(store: Store, run_id: str, **fields: Any) -> None:
    """A run's record for stored rows made by hand; ``fields`` override any of begin_run's."""
    store.begin_run(
        run_id,
        **{
            "label": None,
            "suite_name": "s",
            "suite_source": "s",
            "suite_text": "",
            "started_at": "2026-01-01T00:00:00+00:00",
            "metadata": {"cpu": "CPU", "gpus": []},
        }
        | fields,
    )
