"""The phases and dtypes a case can name, and which architectures can run which phase.

Names only, without torch: the supervisor checks a suite's matrix with them, and the worker's
``carbonbench.execution.workloads`` (which says what each phase's step does) imports them.
"""

from __future__ import annotations

from carbonbench.errors import InputError
from carbonbench.models import architecture, generating

PHASES = ("train", "infer", "prefill", "decode", "train-to-target")
GENERATION_PHASES = ("prefill", "decode")
SUITE_PHASES = ("train", "infer", "train-to-target", "generate")  # generate: prefill + decode
SERVE = "serve"  # a serving engine's level of load (carbonbench serving), not a suite's phase
DTYPE_NAMES = ("float32", "bfloat16")  # torch's names of the dtypes a case may compute in


class PhaseError(InputError):
    """A phase that does not exist: the message lists the valid ones."""


def supports(arch: str, phase: str) -> bool:
    """Generation phases need a key/value cache: the architectures whose record generates."""
    if phase not in PHASES:
        raise PhaseError(f"unknown phase {phase!r}; valid: {', '.join(PHASES)}")
    return phase not in GENERATION_PHASES or architecture(arch).generates


def why_unsupported(phase: str) -> str:
    """Why ``supports`` said no, for messages: which architectures can."""
    return f"{phase} needs a key/value cache ({', '.join(generating()) or 'none'} only)"
