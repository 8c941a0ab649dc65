"""Floating-point operations per forward pass and per training step.

Counted with ``torch.utils.flop_counter`` (matrix products and attention, 2 FLOPs per
multiply-add; element-wise work is not counted) on a twin of the model: the reference variant
of the same configuration on the meta device, which allocates nothing and computes nothing.
The twin is needed because fused kernels hide their arithmetic from the counter (it sees 0 for
nn.LSTM on CPU, cuDNN RNNs and CPU flash attention), while the arithmetic of the architecture is
the same in both variants. ``analytic_flops`` writes the same count out by hand, as a check.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from carbonbench.models.architecture import ArchitectureError
from carbonbench.models.building import build, example_batch
from carbonbench.models.registry import architecture

METHOD = "torch.utils.flop_counter on the reference variant (meta device)"

# Counts by architecture, config and shape: the same in every round of a run, and slow to
# make for the step-by-step recurrent variants, so a run counts each once (``known``/``learn``
# carry them from one worker process to the next).
_COUNTS: dict[str, list[int]] = {}


def _key(kind: str, model: nn.Module, *shape: int) -> str:
    config = dataclasses.asdict(model.config)
    return json.dumps([kind, model.arch, config, *shape], sort_keys=True, default=str)


def known() -> dict[str, list[int]]:
    """Every count made or learnt in this process."""
    return dict(_COUNTS)


def learn(counts: dict[str, list[int]]) -> None:
    """Counts made elsewhere (an earlier worker of the same run)."""
    _COUNTS.update(counts)


@dataclass(frozen=True)
class FlopCount:
    forward: int  # one forward pass over the batch
    train_step: int  # forward + cross-entropy + backward (the optimizer's update is element-wise)
    method: str = METHOD


def count_flops(model: nn.Module, batch_size: int, seq_len: int) -> FlopCount:
    """FLOPs of ``model`` (built by ``carbonbench.models.build``) on a ``batch_size`` x
    ``seq_len`` batch."""
    key = _key("step", model, batch_size, seq_len)
    if key in _COUNTS:
        return FlopCount(*_COUNTS[key])
    record = architecture(model.arch)
    config = dataclasses.asdict(model.config)
    inputs = [t.to("meta") for t in example_batch(model, batch_size, seq_len)]
    # built on meta without allocating, and run on meta inputs outside the device context:
    # code that reads a value (.item()) of a tensor it makes itself (transformers' masks) can
    with torch.device("meta"):
        twin = build(model.arch, impl=record.counting_impl, **config)
    with FlopCounterMode(display=False) as forward_counter:
        twin(*inputs)
    with FlopCounterMode(display=False) as train_counter:
        logits = twin(*inputs)
        targets = torch.zeros(batch_size * seq_len, dtype=torch.long, device="meta")
        F.cross_entropy(logits.flatten(0, 1), targets).backward()
    _COUNTS[key] = [forward_counter.get_total_flops(), train_counter.get_total_flops()]
    return FlopCount(*_COUNTS[key])


def analytic_flops(arch: str, config: object, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs written out by hand, from the architecture's record."""
    record = architecture(arch)
    if record.analytic_flops is None:
        raise ArchitectureError(f"{arch} has no analytic FLOP count in its record")
    return record.analytic_flops(config, batch_size, seq_len)


def count_generation_flops(
    model: nn.Module, batch_size: int, prompt_len: int, new_tokens: int
) -> tuple[int, int]:
    """(prefill, decode) FLOPs of greedy generation with the key/value cache: the prompt's
    forward pass, then ``new_tokens`` one-token forward passes over the growing cache."""
    key = _key("generate", model, batch_size, prompt_len, new_tokens)
    if key in _COUNTS:
        prefill_flops, decode_flops = _COUNTS[key]
        return prefill_flops, decode_flops
    record = architecture(model.arch)
    if not record.generates:
        raise ArchitectureError(f"{model.arch} does not generate (no key/value cache)")
    config = dataclasses.asdict(model.config)
    with torch.device("meta"):
        twin = build(model.arch, impl=record.counting_impl, **config)
    with torch.no_grad():  # on meta inputs, outside the device context (as count_flops)
        cache = twin.new_cache()
        prompt = torch.zeros(batch_size, prompt_len, dtype=torch.long, device="meta")
        with FlopCounterMode(display=False) as prefill:
            twin(prompt, cache)
        token = torch.zeros(batch_size, 1, dtype=torch.long, device="meta")
        with FlopCounterMode(display=False) as decode:
            for _ in range(new_tokens):
                twin(token, cache)
    _COUNTS[key] = [prefill.get_total_flops(), decode.get_total_flops()]
    return prefill.get_total_flops(), decode.get_total_flops()
