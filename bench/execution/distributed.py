"""Distributed training measurement: DistributedDataParallel over N processes.

Launch with ``carbonbench run --nproc N`` (processes on this host), or start ``carbonbench
run`` under torchrun on each host. Backend gloo on CPU, nccl on GPUs. Each rank measures its
own GPU; the host's domains (RAPL, modelled CPU and RAM) are measured once per host, by its
local rank 0, never once per rank. Window edges are synchronised with barriers; rank 0
gathers every rank's measurement over torch.distributed and writes one row per window with
``world_size`` and the per-rank detail, so rows from every host land in rank 0's store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.energy.sensors import COMPONENTS, Sensor, SensorOptions, detect_sensors
from carbonbench.errors import InputError
from carbonbench.execution.coordination import Solo, case_device
from carbonbench.execution.runner import JobFailed, Runner, RunOptions
from carbonbench.execution.supervisor import plan_rounds
from carbonbench.execution.topology import Topology, topology_from_env
from carbonbench.execution.workloads import Work
from carbonbench.results.runlog import RunLog, new_run_id
from carbonbench.results.store import Store
from carbonbench.signals import StopRequest
from carbonbench.suites.suite import Case, Suite

log = logging.getLogger(__name__)


def training_only(suite: Suite) -> Suite:
    """The suite's train cases; the others are listed as skipped, with the reason (applying
    it twice changes nothing)."""
    others = [c for c in suite.cases if c.phase != "train"]
    return dataclasses.replace(
        suite,
        cases=tuple(c for c in suite.cases if c.phase == "train"),
        skipped=suite.skipped
        + tuple(f"{c.case_id}: distributed runs measure phase train only" for c in others),
    )


class DdpCoordinator(Solo):
    """The ranks of a DistributedDataParallel job deciding together: steps per window, when to
    stop, whether a case failed; window edges at barriers; rank 0 writes the job's rows."""

    def __init__(self, topology: Topology, run_id: str, db: str | None, carbon: CarbonSettings):
        self.topology = topology
        self.rank, self.world_size = topology.rank, topology.world_size
        self.writes = topology.rank == 0
        self.run_id, self.db, self.carbon = run_id, db, carbon
        self._ranks: list[dict[str, Any]] = []
        # nccl reduces tensors on the rank's GPU only
        nccl = dist.get_backend() == "nccl"
        self._collective = torch.device("cuda", topology.local_rank) if nccl else None

    def device_for(self, case: Case) -> torch.device:
        device = case_device(case.device)
        if device.type == "cuda":
            return torch.device("cuda", self.topology.local_rank)
        return device

    def settings_device(self, case: Case) -> str:
        """Each rank changes the settings of its own GPU."""
        return f"cuda:{self.topology.local_rank}" if case.device.startswith("cuda") else case.device

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def scale(self, work: Work) -> Work:
        w = self.world_size
        return dataclasses.replace(
            work,
            samples=work.samples * w,
            tokens=work.tokens * w,
            src_tokens=work.src_tokens * w,
            flops=work.flops * w if work.flops else work.flops,
        )

    def agree(self, steps: int) -> int:
        agreed = torch.tensor([steps], device=self._collective)
        dist.broadcast(agreed, src=0)
        return int(agreed.item())

    def agree_most(self, steps: int) -> int:
        value = torch.tensor([steps], device=self._collective)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value.item())

    def agree_flag(self, flag: bool) -> bool:
        return bool(self.agree_most(int(flag)))

    def check_every_step(self) -> bool:
        return False  # only between windows, where every rank is, and together

    def after_failure(self, case: Case, error: Exception, message: str) -> None:
        """A failure the ranks did not reach together (an exception on one of them, mid-step)
        leaves the others inside a collective: the job stops, after rank 0 recorded it or
        this rank added it to rank 0's store where that is the same file."""
        if getattr(error, "agreed", False):
            return
        if self.rank != 0:
            self._record_elsewhere(case, message)
        raise JobFailed(f"rank {self.rank} failed, so the job stops: {message}")

    def _record_elsewhere(self, case: Case, message: str) -> None:
        if self.db is None or not os.path.exists(self.db):
            return
        try:
            with Store(self.db, create=False) as store:
                run = store.run(self.run_id)  # raises unless this file is rank 0's store
                record = RunLog(store, self.run_id, run.metadata)
                record.failed(case, 0, f"rank {self.rank}: {message}", self.carbon, self.world_size)
                record.end("failed")
        except Exception as error:  # best effort: the job stops with the message either way
            log.warning("rank %d could not record its failure: %s", self.rank, error)

    @contextmanager
    def window(self, meter: EnergyMeter, name: str) -> Iterator[Measurement]:
        merged = Measurement(name)
        dist.barrier()
        with meter.window(name) as mine:
            yield merged
            dist.barrier()  # every rank has finished its steps: end the window together
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, {"rank": self.rank, "host": self.topology.host, "m": mine})
        self._merge(merged, parts)

    def _merge(self, merged: Measurement, parts: list[dict[str, Any]]) -> None:
        """One measurement of the job: every rank's domains (host-prefixed when the job spans
        hosts), the longest duration, rank 0's timeline."""
        hosts = {p["host"] for p in parts}

        def key(part: dict[str, Any], domain: str) -> str:
            return domain if len(hosts) == 1 else f"{part['host']}/{domain}"

        first: Measurement = parts[0]["m"]
        for name in ("started_at", "timeline", "samples", "constants"):
            setattr(merged, name, getattr(first, name))
        merged.duration_s = max(p["m"].duration_s for p in parts)
        idle = all(p["m"].idle_w is not None for p in parts)
        merged.idle_w = {} if idle else None
        for part in parts:
            m: Measurement = part["m"]
            for domain, joules in m.energy_j.items():
                merged.energy_j[key(part, domain)] = joules
                merged.method[key(part, domain)] = m.method[domain]
                merged.additive[key(part, domain)] = m.additive[domain]
                if merged.idle_w is not None and m.idle_w is not None:
                    merged.idle_w[key(part, domain)] = m.idle_w.get(domain, 0.0)
            merged.diagnostics += [f"rank {part['rank']}: {d}" for d in m.diagnostics]
        merged.complete = True
        self._ranks = [
            {
                "rank": p["rank"],
                "host": p["host"],
                "duration_s": p["m"].duration_s,
                "energy_j": p["m"].energy_j,
                "method": p["m"].method,
            }
            for p in parts
        ]

    def row_extra(self) -> dict[str, Any]:
        return {"ranks": self._ranks}


def _sensors(topology: Topology, uses_gpu: bool, cpu_tdp_w: float | None) -> list[Sensor]:
    """This rank's share: its own GPU; the host's components on local rank 0 only. A GPU no
    source can measure has no domain, which its rows show."""
    components = {"gpu"} if uses_gpu else set()
    if topology.local_rank == 0:
        components |= set(COMPONENTS) - {"gpu"}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entry = visible.split(",")[topology.local_rank] if visible else str(topology.local_rank)
    options = SensorOptions(cpu_tdp_w=cpu_tdp_w, gpus=entry, first_gpu_index=topology.local_rank)
    return detect_sensors(options, components=components).sensors


def run_rank(
    suite: Suite,
    db: str,
    carbon: CarbonSettings,
    options: RunOptions,
    run_id: str | None = None,
    cpu_tdp_w: float | None = None,
    rounds: range | None = None,
) -> tuple[str, str]:
    """This process's part of a distributed run, ``rounds`` of it (default: all the suite's,
    one after the other, in this process: torchrun owns the processes); returns (run id,
    status)."""
    topology = topology_from_env()
    if topology is None:
        raise InputError("not inside a distributed job: launch with --nproc N or torchrun")
    suite = training_only(suite)
    uses_gpu = any(c.device.startswith("cuda") for c in suite.cases)
    backend = "nccl" if uses_gpu else "gloo"
    timeout = timedelta(seconds=suite.measure.case_timeout_s + 120)
    if uses_gpu:  # nccl's barriers and object collectives run on the current device
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if topology.local_rank >= gpus:
            raise InputError(
                f"local rank {topology.local_rank} needs its own GPU, but torch sees {gpus} "
                "on this host: start at most one process per GPU, or run cases on cpu"
            )
        torch.cuda.set_device(topology.local_rank)
    dist.init_process_group(backend, timeout=timeout)
    try:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // topology.local_world_size))
        ids = [run_id or new_run_id()]
        dist.broadcast_object_list(ids, src=0)
        store = Store(db) if topology.rank == 0 else None
        count = options.rounds or suite.measure.rounds
        orders = plan_rounds([c.case_id for c in suite.cases], range(count), options.seed)
        by_id = {c.case_id: c for c in suite.cases}
        status = "ok"
        with EnergyMeter(_sensors(topology, uses_gpu, cpu_tdp_w), suite.measure.interval_s) as m:
            coordinator = DdpCoordinator(topology, ids[0], db, carbon)
            for round in rounds if rounds is not None else range(count):
                shuffled = dataclasses.replace(suite, cases=tuple(by_id[i] for i in orders[round]))
                runner = Runner(
                    shuffled,
                    store,
                    m,
                    carbon,
                    options,
                    coordinator=coordinator,
                    run_id=ids[0],
                    round=round,
                    rounds=count,
                )
                status = runner.run()
                if status == "interrupted":
                    break
        if store is not None:
            store.close()
        return ids[0], status
    finally:
        dist.destroy_process_group()


def _spawned(local_rank: int, nproc: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    run_rank(*args)


def _join(context: Any) -> None:
    """Wait for every rank. A first Ctrl-C reaches the ranks as well (one process group), and
    they stop after their window (decided together): keep waiting for them; a SIGTERM sent to
    this process alone is passed on to them as that first stop. A second signal stops at once
    (KeyboardInterrupt)."""

    def forward(name: str) -> None:
        if name != "SIGINT":
            for process in context.processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)

    with StopRequest(on_first=forward).installed():
        while not context.join():
            pass


def launch(
    nproc: int,
    suite: Suite,
    db: str,
    carbon: CarbonSettings,
    options: RunOptions,
    cpu_tdp_w: float | None = None,
) -> str:
    """Run ``nproc`` processes on this host; returns the run id."""
    if nproc < 2:
        raise InputError(f"--nproc must be at least 2, got {nproc}")
    run_id = new_run_id()
    for round in range(options.rounds or suite.measure.rounds):  # fresh processes each round
        with socket.socket() as probe:  # a free port for the rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        job = (suite, db, carbon, options, run_id, cpu_tdp_w, range(round, round + 1))
        context = mp.start_processes(_spawned, args=(nproc, port, job), nprocs=nproc, join=False)
        _join_round(context, run_id)
        with Store(db, create=False) as store:
            if store.run(run_id).status == "interrupted":
                break
    return run_id


def _join_round(context: Any, run_id: str) -> None:
    try:
        _join(context)
    except mp.ProcessRaisedException as error:  # the others were stopped with it
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise JobFailed(f"run {run_id}: {lines[-1] if lines else error}") from None
    except mp.ProcessExitedException as error:
        raise JobFailed(f"run {run_id}: {error}") from None
