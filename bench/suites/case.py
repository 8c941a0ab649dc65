"""The identity of a case: what a suite expands into, what every result row carries, and the
key that groups rows into a case everywhere (run table, report, gate)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Case:
    arch: str
    size: str
    impl: str
    phase: str
    batch: int
    seq_len: int
    device: str
    dtype: str
    # settings a suite may sweep (None: left as the machine has it, and not in the case id)
    threads: int | None = None  # torch intra-op threads
    power_limit_w: int | None = None  # GPU power limit (NVML), CUDA devices only
    sm_clock_mhz: int | None = None  # locked GPU SM clock (NVML), CUDA devices only
    # a serving level (``carbonbench serving``): requests in flight, or Poisson arrivals per s
    concurrency: int | None = None
    rate: float | None = None

    @property
    def case_id(self) -> str:
        """``arch/size/impl/phase/bB/sS/device/dtype``, then ``/tN``, ``/plWw``, ``/smMmhz``
        (and a serving level's ``/cN`` or ``/rR``) for the settings given: readable, unique
        within a suite, and unchanged for cases that set none (so runs before settings existed
        compare with runs after)."""
        shape = f"b{self.batch}/s{self.seq_len}"
        parts = [self.arch, self.size, self.impl, self.phase, shape, self.device, self.dtype]
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        if self.power_limit_w is not None:
            parts.append(f"pl{self.power_limit_w}w")
        if self.sm_clock_mhz is not None:
            parts.append(f"sm{self.sm_clock_mhz}mhz")
        if self.concurrency is not None:
            parts.append(f"c{self.concurrency}")
        if self.rate is not None:
            parts.append(f"r{self.rate:g}")
        return "/".join(parts)

    @property
    def settings(self) -> dict[str, object]:
        """The values of the knobs a sweep can turn (KNOBS), by name."""
        return {k: getattr(self, k) for k in KNOBS}

    @classmethod
    def of(cls, record: object) -> Case:
        """The case of anything that carries its fields (a result row, a summary)."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(cls)})


CASE_FIELDS = tuple(f.name for f in fields(Case))
KNOBS = (
    "batch",
    "seq_len",
    "dtype",
    "impl",
    "size",
    "threads",
    "power_limit_w",
    "sm_clock_mhz",
    "concurrency",
    "rate",
)
"""The fields of a case that are settings of the same work (a sweep's axes), as opposed to
what the work is (arch, phase) and where it runs (device): what ``pareto`` compares within a
group."""
DEVICE_KNOBS = ("power_limit_w", "sm_clock_mhz")
"""Settings carbonbench changes on a GPU, and puts back (``carbonbench.energy.controls``)."""
