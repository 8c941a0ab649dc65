"""A serving engine measured under load: levels in rounds, one row per level and round.

``ServingRun`` owns the run: it starts the server when given its command (and stops it at the
end, whatever happens), checks the endpoint before anything is stored, warms the server up
(first-request and first-batch costs excluded), measures the idle baseline with the server
loaded and idle, then measures each level of each round (``--rounds``; the levels shuffled per
round, seeded) with the EnergyMeter on this machine's GPUs and CPU: one window over the whole
level and one over its steady state (``carbonbench.serving.load``), opened and closed by the
load's hooks at the instants the steady state begins and ends. The row's energy, duration and
tokens are the steady state's; the whole level's are kept beside them in ``extra``.

The server stays up across rounds: a round here is a repetition of every level against the
same server process, so the interval over rounds holds the variance of the load and of the
machine, not of the server's start-up.

A level that fails (its server died, or no request of it succeeded) is stored as a failed row
with the cause; a dead server ends the run (exit 1) with every level measured before stored.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.energy.provenance import host, sensors_of
from carbonbench.energy.sensors import SensorOptions, detect_sensors
from carbonbench.errors import InputError
from carbonbench.results.metadata import RunMetadata
from carbonbench.results.recorder import Recorder
from carbonbench.results.runlog import RunLog, new_run_id
from carbonbench.results.store import ResultRow, Store
from carbonbench.serving.client import Endpoint, RequestRecord, check
from carbonbench.serving.load import Hooks, LevelTrace, closed_loop, poisson, warm_up
from carbonbench.serving.prompts import LengthSpec, make_prompts
from carbonbench.serving.server import ServerProcess
from carbonbench.serving.stats import level_stats
from carbonbench.signals import StopRequest
from carbonbench.suites.case import Case
from carbonbench.suites.phases import SERVE

log = logging.getLogger(__name__)

LEVEL, STEADY = "level", "steady"  # the meter's two windows of a level
REQUEST_FIELDS = 200  # at most this many requests' own figures kept per row
DEATH_S = 1.0  # after a level with failed requests, how long a dying server may take to end


@dataclass(frozen=True)
class Level:
    """One level of load: ``concurrency`` requests always in flight, or Poisson arrivals at
    ``rate`` per second."""

    concurrency: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("a level is a concurrency or a rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise InputError(f"--concurrency {self.concurrency}: give at least 1")
        if self.rate is not None and not self.rate > 0:
            raise InputError(f"--rate {self.rate:g}: give a positive number of requests per s")

    def __str__(self) -> str:
        return f"concurrency {self.concurrency}" if self.rate is None else f"rate {self.rate:g}/s"


@dataclass
class ServingOptions:
    url: str
    model: str
    levels: list[Level]
    chat: bool = False
    requests: int = 32
    prompt_tokens: LengthSpec = field(default_factory=lambda: LengthSpec.parse("64"))
    max_tokens: LengthSpec = field(default_factory=lambda: LengthSpec.parse("64"))
    corpus: Path | None = None
    seed: int = 0
    rounds: int = 1
    warmup: int = 2
    timeout_s: float = 300.0
    idle_baseline_s: float = 5.0
    interval_s: float = 0.1
    server: str | None = None
    server_timeout_s: float = 300.0
    label: str | None = None
    cpu_tdp_w: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    latency_limit_s: float | None = None  # a p90 inter-token latency objective (the report's)

    def stored(self) -> dict[str, Any]:
        """What decides the numbers besides the levels, for the run's record."""
        return {
            "url": self.url,
            "model": self.model,
            "api": "chat" if self.chat else "completions",
            "requests": self.requests,
            "prompt_tokens": str(self.prompt_tokens),
            "max_tokens": str(self.max_tokens),
            "corpus": str(self.corpus) if self.corpus else None,
            "seed": self.seed,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "timeout_s": self.timeout_s,
            "server": self.server,
            "extra_body": self.extra_body,
            "latency_limit_s": self.latency_limit_s,
        }


@dataclass
class LevelDone:
    """What the command line shows after each level."""

    round: int
    level: Level
    row: ResultRow


@dataclass
class ServingOutcome:
    run_id: str
    status: str  # ok | failed | interrupted
    error: str | None = None  # why the run ended early (a dead server)
    rows: list[ResultRow] = field(default_factory=list)


def check_local(url: str) -> None:
    """The meter measures this machine: a server elsewhere would be timed here but not
    measured, so its energy would be this machine's idle power. Refused, in one line."""
    hostname = urlsplit(url).hostname
    if not hostname:
        raise InputError(f"--url {url!r} is not http(s)://HOST:PORT: give the server's address")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    except socket.gaierror:
        raise InputError(f"--url {url!r}: cannot resolve {hostname!r}") from None
    local = _local_addresses()
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or address in local:
            return
    raise InputError(
        f"--url {url!r} is not on this machine ({', '.join(sorted(addresses))}): carbonbench "
        "measures the energy of the machine it runs on, so run it where the server runs"
    )


def _local_addresses() -> set[str]:
    import psutil

    return {a.address for nic in psutil.net_if_addrs().values() for a in nic}


class ServingRun:
    """Measures one serving engine at every level, in rounds, into one stored run."""

    def __init__(
        self,
        options: ServingOptions,
        db: str | Path,
        carbon: CarbonSettings,
        *,
        run_id: str | None = None,
        on_level: Callable[[LevelDone], None] | None = None,
        logs: Path | None = None,
    ) -> None:
        self.options, self.db, self.carbon = options, Path(db), carbon
        self.run_id = run_id or new_run_id()
        self.on_level = on_level or (lambda done: None)
        self.logs = logs or self.db.parent / "logs" / self.run_id
        self.server: ServerProcess | None = None
        # a Ctrl-C or SIGTERM aborts the level in flight (its requests are cut), the load
        # sees it at once; a second one stops at once
        self.aborted = threading.Event()
        self.stop = StopRequest(on_first=lambda name: self.aborted.set())

    @property
    def endpoint(self) -> Endpoint:
        o = self.options
        return Endpoint(o.url, o.model, o.chat, o.timeout_s, o.extra_body)

    def run(self) -> ServingOutcome:
        """Start (if asked) and check the server, then measure. InputError before anything is
        stored when the server cannot be used; a run record once measuring begins."""
        o = self.options
        check_local(o.url)
        if not o.levels:
            raise InputError("no level to measure: give --concurrency N or --rate R")
        try:
            if o.server is not None:
                self.logs.mkdir(parents=True, exist_ok=True)
                self.server = ServerProcess(
                    o.server, o.url, self.logs / "server.log", timeout_s=o.server_timeout_s
                )
                log.info("starting the server: %s", o.server)
                self.server.start()
            check(self.endpoint)
            prompts = make_prompts(
                max(o.warmup, 1), o.prompt_tokens, o.max_tokens, o.corpus, o.seed + 1_000_003
            )
            warm_up(self.endpoint, prompts, o.warmup)
            self._warm_concurrent(prompts)
            self._dead_check()
            return self._measure()
        finally:
            if self.server is not None:
                self.server.stop()

    def _warm_concurrent(self, prompts: list) -> None:
        """Then a burst at the run's highest concurrency, unmeasured: an engine's first batch
        of several requests pays its own first costs (here, ``transformers serve`` took ten
        times longer per token on the first concurrent level than on the same level later),
        which would otherwise land on whichever level a round measures first."""
        o = self.options
        if o.warmup < 1:
            return
        width = max([lv.concurrency or 0 for lv in o.levels] + [2])
        trace = closed_loop(self.endpoint, prompts, width, max(o.warmup, width))
        failed = sum(1 for r in trace.records if r.status != "ok")
        if failed:
            log.warning("concurrent warm-up: %d of %d requests failed", failed, len(trace.records))

    def _dead_check(self) -> None:
        if self.server is not None and not self.server.alive():
            raise InputError(self._death())

    def _died_in(self, trace: LevelTrace) -> bool:
        """Whether the server this run started died during the level: ended now, or within
        ``DEATH_S`` of a level whose requests failed unaborted (they fail as it dies, a moment
        before its exit status can be read, and may all end before the load looks)."""
        if self.server is None:
            return False
        failed = not trace.aborted and any(r.status != "ok" for r in trace.records)
        return not self.server.alive() or (failed and self.server.ended_within(DEATH_S))

    def _death(self) -> str:
        assert self.server is not None
        lines = " | ".join(self.server.last_lines(3))
        return (
            f"the server died ({_status(self.server.exit_status)}); its last lines: {lines} "
            f"(log: {self.server.log_path})"
        )

    def _measure(self) -> ServingOutcome:
        o = self.options
        detection = detect_sensors(
            SensorOptions(cpu_tdp_w=o.cpu_tdp_w), components={"gpu", "cpu", "memory"}
        )
        outcome = ServingOutcome(self.run_id, "ok")
        with (
            Store(self.db) as store,
            EnergyMeter(detection.sensors, o.interval_s) as meter,
            self.stop.installed(),
        ):
            meter.diagnostics = detection.diagnostics
            if o.idle_baseline_s > 0:
                meter.idle_baseline(o.idle_baseline_s)
            record = self._begin(store, meter)
            recorder = Recorder(store, self.run_id, self.carbon)
            device = "cuda" if "gpu" in {c for s in meter.sensors for c in s.components} else "cpu"
            try:
                for round, order in enumerate(self._order()):
                    for level in order:
                        if self.stop.requested:
                            outcome.status = "interrupted"
                            return outcome
                        row = self._level(meter, recorder, round, level, device)
                        outcome.rows.append(row)
                        self.on_level(LevelDone(round, level, row))
                        if row.status != "ok":
                            outcome.status = "failed"
                        if self.server is not None and not self.server.alive():
                            outcome.status = "failed"  # its other levels go unmeasured
                            outcome.error = self._death()
                            return outcome
                return outcome
            finally:
                if self.stop.requested and outcome.status == "ok":
                    outcome.status = "interrupted"
                record.end(
                    outcome.status,
                    error=outcome.error,
                    stopped_by=self.stop.signal,
                    logs=str(self.logs) if self.server is not None else None,
                )

    def _order(self) -> list[list[Level]]:
        """Each round's levels, shuffled (seeded) as a suite's rounds shuffle cases, so that a
        drift over the run spreads over the levels instead of biasing the last."""
        rng = random.Random(self.options.seed)
        order = []
        for _ in range(self.options.rounds):
            levels = list(self.options.levels)
            rng.shuffle(levels)
            order.append(levels)
        return order

    def _begin(self, store: Store, meter: EnergyMeter) -> RunLog:
        o = self.options
        details = {**host(), **sensors_of(meter)}
        metadata = RunMetadata(
            **RunMetadata.fields_in(details),
            kind="serving",
            carbon=self.carbon.to_dict(),
            rounds=o.rounds,
            idle_w=meter.idle_w,
            extra={"serving": o.stored()},
        )
        return RunLog.begin(
            store,
            self.run_id,
            label=o.label,
            suite_name="serving",
            suite_source=o.server or o.url,
            suite_text="",
            metadata=metadata,
        )

    def case(self, level: Level, device: str) -> Case:
        """A level as a case: the model as its architecture, the API as its variant."""
        return Case(
            arch=self.options.model,
            size="-",
            impl="chat" if self.options.chat else "completions",
            phase=SERVE,
            batch=0,
            seq_len=0,
            device=device,
            dtype="-",
            concurrency=level.concurrency,
            rate=level.rate,
        )

    def _level(
        self, meter: EnergyMeter, recorder: Recorder, round: int, level: Level, device: str
    ) -> ResultRow:
        o = self.options
        case = self.case(level, device)
        seed = o.seed + 7919 * round + zlib.crc32(str(level).encode()) % 7919
        prompts = make_prompts(o.requests, o.prompt_tokens, o.max_tokens, o.corpus, seed)
        windows: dict[str, Measurement] = {}
        open_windows: set[str] = set()
        lock = threading.Lock()

        def begin() -> None:
            with lock:
                meter.begin_window(STEADY)
                open_windows.add(STEADY)

        def end() -> None:
            with lock:
                if STEADY in open_windows:
                    windows[STEADY] = meter.end_window(STEADY)
                    open_windows.discard(STEADY)

        hooks = Hooks(
            on_steady_start=begin,
            on_steady_end=end,
            stop=self.aborted,
            alive=self.server.alive if self.server is not None else (lambda: True),
        )
        log.info("round %d, %s: %d requests", round, level, o.requests)
        meter.begin_window(LEVEL)
        try:
            if level.concurrency is not None:
                trace = closed_loop(self.endpoint, prompts, level.concurrency, o.requests, hooks)
            else:
                assert level.rate is not None
                trace = poisson(self.endpoint, prompts, level.rate, o.requests, seed, hooks)
        finally:
            whole = meter.end_window(LEVEL)
            end()  # a load that ended without closing it (an error)
        return self._row(recorder, case, round, trace, whole, windows.get(STEADY))

    def _row(
        self,
        recorder: Recorder,
        case: Case,
        round: int,
        trace: LevelTrace,
        whole: Measurement,
        steady: Measurement | None,
    ) -> ResultRow:
        stats = level_stats(trace)
        counts = stats.counts
        extra: dict[str, Any] = {
            **stats.to_extra(),
            "level_energy_j": whole.total_energy_j,
            "level_duration_s": whole.duration_s,
            "level_energy_by_domain": whole.energy_j,
            "request_log": [_request(r) for r in trace.records[:REQUEST_FIELDS]],
        }
        failure = None
        if self._died_in(trace):
            failure = self._death()
        elif trace.aborted:
            failure = f"the level was stopped: {trace.abort_reason or 'interrupted'}"
        elif counts.get("ok", 0) == 0:
            causes = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "ok")
            first = next((r.error for r in trace.records if r.error), "")
            failure = f"no request succeeded ({causes}): {first}"
        if failure is not None:
            row = recorder.row(case, round, 0, status="failed", error=failure, extra=extra)
            recorder.save(row)
            return row
        window = steady if steady is not None and steady.duration_s > 0 else whole
        tokens = stats.steady_output_tokens if window is steady else stats.output_tokens
        ok = counts["ok"]
        requests_in_window = ok * (tokens / stats.output_tokens) if stats.output_tokens else 0
        extra.update(
            window="steady" if window is steady else "level",
            energy_per_request_j=(
                window.total_energy_j / requests_in_window if requests_in_window else None
            ),
            level_energy_per_request_j=whole.total_energy_j / ok,
        )
        if window is whole:
            log.warning("%s: no steady state (too few requests); measured over the level", case)
        row = recorder.measured(
            case,
            round,
            0,
            window,
            steps=ok,
            samples=ok,
            tokens=round_tokens(tokens),
            src_tokens=stats.prompt_tokens,
            flops=None,
            flops_method=None,
            extra=extra,
        )
        recorder.save(row)
        return row


def round_tokens(tokens: float) -> int:
    """Rows count whole tokens: the steady window's share of each request's tokens rounded
    once, over the level (the fraction is in ``extra.steady_output_tokens``)."""
    return round(tokens)


def _request(record: RequestRecord) -> dict[str, Any]:
    return {
        "status": record.status,
        "ttft_s": record.ttft_s,
        "e2e_s": record.e2e_s,
        "prompt_tokens": record.prompt_tokens,
        "output_tokens": record.output_tokens,
        "tokens_source": record.tokens_source,
        "error": record.error or None,
    }


def _status(status: int | None) -> str:
    if status is None:
        return "still running"
    if status < 0:
        return f"killed by signal {-status}"
    return f"exit status {status}"
