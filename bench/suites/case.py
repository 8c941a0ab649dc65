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

    @property
    def case_id(self) -> str:
        """``arch/size/impl/phase/bB/sS/device/dtype``: readable, and unique within a suite."""
        shape = f"b{self.batch}/s{self.seq_len}"
        return "/".join(
            (self.arch, self.size, self.impl, self.phase, shape, self.device, self.dtype)
        )

    @classmethod
    def of(cls, record: object) -> Case:
        """The case of anything that carries its fields (a result row, a summary)."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(cls)})


CASE_FIELDS = tuple(f.name for f in fields(Case))
