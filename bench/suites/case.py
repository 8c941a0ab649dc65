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
        shape = f"{tag('batch', self.batch)}/{tag('seq_len', self.seq_len)}"
        parts = [self.arch, self.size, self.impl, self.phase, shape, self.device, self.dtype]
        for knob in ("threads", "power_limit_w", "sm_clock_mhz", "concurrency", "rate"):
            value = getattr(self, knob)
            if value is not None:
                parts.append(tag(knob, value))
        return "/".join(parts)

    @property
    def settings(self) -> dict[str, object]:
        """The values of the knobs a sweep can turn (KNOBS), by name."""
        return {k: getattr(self, k) for k in KNOBS}

    @classmethod
    def of(cls, record: object) -> Case:
        """The case of anything that carries its fields (a result row, a summary)."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(cls)})


_TAGS = {
    "batch": ("b", ""),
    "seq_len": ("s", ""),
    "threads": ("t", ""),
    "power_limit_w": ("pl", "w"),
    "sm_clock_mhz": ("sm", "mhz"),
    "concurrency": ("c", ""),
    "rate": ("r", ""),
}


def tag(knob: str, value: object) -> str:
    """A setting as case ids and tables write it: ``b8``, ``t2``, ``pl300w``, ``sm1410mhz``,
    ``c4``, ``r2.5``; a setting named by its value (dtype, impl, size) as that value."""
    prefix, unit = _TAGS.get(knob, ("", ""))
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{prefix}{text}{unit}"


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
