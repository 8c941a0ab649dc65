"""Floating-point operations per forward pass and per training step.

Counted with ``torch.utils.flop_counter`` (matrix products and attention, 2 FLOPs per
multiply-add; element-wise work is not counted) on a twin of the model: the reference variant
of the same configuration on the meta device, which allocates nothing and computes nothing.
The twin is needed because fused kernels hide their arithmetic from the counter (it sees 0 for
nn.LSTM on CPU, cuDNN RNNs and CPU flash attention), while the arithmetic of the architecture is
the same in both variants. ``analytic_flops`` writes the same count out by hand, as a check.

Counting costs seconds (building the twin on meta imports torch._dynamo, and the step-by-step
recurrent variants are slow), so counts are kept by ``count_key``: everything that determines
one. ``known``/``learn`` carry them between processes, and the supervisor keeps them in the
store, so a run whose counts are known neither counts nor imports torch._dynamo.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from carbonbench.models.architecture import ArchitectureError
from carbonbench.models.building import build, example_batch
from carbonbench.models.registry import architecture

METHOD = "torch.utils.flop_counter on the reference variant (meta device)"

# Counts by ``count_key``: made once, then learnt by later workers and runs.
_COUNTS: dict[str, list[int]] = {}
# sha256 of a source file by (path, mtime, size): a file edited in this process hashes anew
_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_PACKAGE = Path(__file__).resolve().parent  # carbonbench.models: the counter and the built-ins


def count_key(kind: str, model: nn.Module, *shape: int) -> str:
    """What determines a count of ``kind`` (step, generate) on ``shape``: the architecture
    (name, record source, counting variant, config), torch's version and the code it runs."""
    record = architecture(model.arch)
    key = {
        "kind": kind,
        "arch": model.arch,
        "source": record.source,
        "impl": record.counting_impl,
        "config": dataclasses.asdict(model.config),
        "shape": list(shape),
        "torch": torch.__version__,
        "code": _code_hash(model),
    }
    return json.dumps(key, sort_keys=True, default=str)


def _code_hash(model: nn.Module) -> str:
    """sha256 over the files that define the twin: the model's class and the counting
    variant's builder (the twin is not built to find its class: building it is the cost
    saved), and every module of carbonbench.models, which holds this counter and the layers
    the built-ins share."""
    record = architecture(model.arch)
    files = set(_PACKAGE.glob("*.py"))
    for obj in (type(model), record.builder(record.counting_impl)):
        path = _source_file(obj)
        if path is not None:
            files.add(path)
    digests = sorted(_file_hash(path) for path in files)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _source_file(obj: object) -> Path | None:
    """The file defining a class or function; None for one without (built in, interactive)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        obj = type(obj)  # a callable instance
    try:
        return Path(inspect.getfile(obj)).resolve()
    except (TypeError, OSError):
        return None


def _file_hash(path: Path) -> str:
    stat = os.stat(path)
    cache = (str(path), stat.st_mtime_ns, stat.st_size)
    if cache not in _FILE_HASHES:
        _FILE_HASHES[cache] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _FILE_HASHES[cache]


def known() -> dict[str, list[int]]:
    """Every count made or learnt in this process."""
    return dict(_COUNTS)


def learn(counts: dict[str, list[int]]) -> None:
    """Counts made elsewhere (an earlier worker, or an earlier run, kept in the store)."""
    _COUNTS.update(counts)


@dataclass(frozen=True)
class FlopCount:
    forward: int  # one forward pass over the batch
    train_step: int  # forward + cross-entropy + backward (the optimizer's update is element-wise)
    method: str = METHOD


def count_flops(model: nn.Module, batch_size: int, seq_len: int) -> FlopCount:
    """FLOPs of ``model`` (built by ``carbonbench.models.build``) on a ``batch_size`` x
    ``seq_len`` batch."""
    key = count_key("step", model, batch_size, seq_len)
    if key in _COUNTS:
        return FlopCount(*_COUNTS[key])
    record = architecture(model.arch)
    config = dataclasses.asdict(model.config)
    inputs = [t.to("meta") for t in example_batch(model, batch_size, seq_len)]
    # built on meta without allocating, and run on meta inputs outside the device context:
    # code that reads a value (.item()) of a tensor it makes itself (transformers' masks) can
    with torch.device("meta"):
        twin = build(model.arch, impl=record.counting_impl, **config)
    # one forward pass, counted apart from the loss and backward that follow it: a step is
    # the sum (counting a second forward inside the step's counter cost a quarter more)
    with FlopCounterMode(display=False) as forward_counter:
        logits = twin(*inputs)
    with FlopCounterMode(display=False) as backward_counter:
        targets = torch.zeros(batch_size * seq_len, dtype=torch.long, device="meta")
        F.cross_entropy(logits.flatten(0, 1), targets).backward()
    forward = forward_counter.get_total_flops()
    _COUNTS[key] = [forward, forward + backward_counter.get_total_flops()]
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
    key = count_key("generate", model, batch_size, prompt_len, new_tokens)
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
