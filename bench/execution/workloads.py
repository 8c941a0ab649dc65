"""What one step of each phase does, and how much work that is.

Phases:
- ``train``: forward, cross-entropy, backward, AdamW step.
- ``infer``: forward without gradients.
- ``prefill`` (architectures that generate): the prompt's forward pass, filling the key/value
  cache.
- ``decode`` (likewise): ``new_tokens`` greedy tokens, one forward pass each, from a prefilled
  cache.
- ``train-to-target``: train steps on fresh data until the validation loss reaches a target
  (driven by the runner; a step here is one train step).

Work per step. ``tokens`` counts the tokens whose next-token prediction is computed: for
language models batch x seq_len; for encoder-decoders the target tokens, batch x seq_len (the
source tokens, as many again, are recorded as ``src_tokens``); for prefill the prompt tokens;
for decode the generated tokens; for masked language models every position, batch x seq_len
(the encoder's work; the loss is taken at the masked ones only). ``samples`` is the batch
size. FLOPs come from
``carbonbench.models.flops`` (torch.utils.flop_counter), counted once per case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carbonbench.errors import InputError
from carbonbench.execution.data import Batch, CorpusSource, MarkovSource, MaskingTask, ReversalTask
from carbonbench.models import architecture
from carbonbench.models.flops import METHOD, count_flops, count_generation_flops
from carbonbench.suites.phases import DTYPE_NAMES, GENERATION_PHASES, supports, why_unsupported

# the phase and dtype names are the suites' (torch-free); here, what they mean to torch
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
POOL = 8  # distinct batches cycled through in measured windows: data costs nothing there


@dataclass(frozen=True)
class Work:
    samples: int
    tokens: int
    flops: int
    src_tokens: int = 0
    flops_method: str = METHOD


@dataclass
class Workload:
    phase: str
    step: Callable[[], Tensor | None]  # one step; returns the loss (detached) when training
    work: Work  # per step
    evaluate: Callable[[], float] | None = None  # validation loss (training phases)
    entropy_rate: float | None = None  # the data's optimum loss, where known


class WorkloadError(InputError):
    """A phase, dtype or corpus this case cannot run with: the message names the fix."""


def make_source(model: nn.Module, corpus: str | None, seed: int):
    """The data of this model: Markov language, its reversal or masking task, or the user's
    corpus. A masked language model keeps its vocabulary's last id for the mask."""
    kind = architecture(model.arch).kind
    reserved = 1 if kind == "masked-lm" else 0
    if corpus is not None:
        source: MarkovSource | CorpusSource = CorpusSource(corpus, seed)
        if model.config.vocab < source.vocab + reserved:
            needed = source.vocab + reserved
            raise WorkloadError(
                f"byte-level corpus needs vocab >= {needed}; build {model.arch} with vocab={needed}"
            )
    else:
        source = MarkovSource(model.config.vocab - reserved, seed)
    if kind == "encoder-decoder":
        return ReversalTask(source)
    if kind == "masked-lm":
        return MaskingTask(source, mask_id=model.config.vocab - 1)
    return source


def _batch(source, batch: int, seq_len: int, device: torch.device) -> Batch:
    b = (
        source.batch(batch, seq_len)
        if isinstance(source, ReversalTask | MaskingTask)
        else source.lm_batch(batch, seq_len)
    )
    return Batch(tuple(t.to(device) for t in b.inputs), b.targets.to(device))


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_workload(
    model: nn.Module,
    phase: str,
    *,
    batch: int,
    seq_len: int,
    device: torch.device,
    dtype: str = "float32",
    corpus: str | None = None,
    new_tokens: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
    forward: nn.Module | None = None,
) -> Workload:
    """One step of ``phase`` for ``model`` (already on ``device``) and its work.

    ``forward`` is the module to call when it is not the model itself (a
    DistributedDataParallel wrapper, whose calls synchronise gradients)."""
    net = forward if forward is not None else model
    if dtype not in DTYPES:
        raise WorkloadError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if not supports(model.arch, phase):
        raise WorkloadError(f"{model.arch}: {why_unsupported(phase)}")
    autocast = _autocast(device, DTYPES[dtype])
    source = make_source(model, corpus, seed)
    encoder_decoder = architecture(model.arch).encoder_decoder
    src_tokens = batch * seq_len if encoder_decoder else 0

    if phase in GENERATION_PHASES:
        return _generation(model, phase, source, batch, seq_len, new_tokens, device, autocast)

    flops = count_flops(model, batch, seq_len)
    if phase == "infer":
        pool = cycle([_batch(source, batch, seq_len, device) for _ in range(POOL)])

        def infer() -> None:
            inputs = next(pool).inputs
            with torch.inference_mode(), autocast:
                net(*inputs)

        model.eval()
        return Workload(phase, infer, Work(batch, batch * seq_len, flops.forward, src_tokens))

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    if phase == "train":
        pool = cycle([_batch(source, batch, seq_len, device) for _ in range(POOL)])

        def next_batch() -> Batch:
            return next(pool)
    else:  # train-to-target: fresh data every step, so the loss measures generalisation

        def next_batch() -> Batch:
            return _batch(source, batch, seq_len, device)

    def train() -> Tensor:
        b = next_batch()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = net(*b.inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), b.targets.flatten())
        loss.backward()
        optimizer.step()
        return loss.detach()

    held_out = [_batch(source, batch, seq_len, device) for _ in range(4)]

    def evaluate() -> float:
        model.eval()
        losses = []
        with torch.inference_mode(), autocast:
            for b in held_out:
                logits = net(*b.inputs)
                losses.append(F.cross_entropy(logits.float().flatten(0, 1), b.targets.flatten()))
        model.train()
        return float(torch.stack(losses).mean())

    model.train()
    return Workload(
        phase,
        train,
        Work(batch, batch * seq_len, flops.train_step, src_tokens),
        evaluate,
        getattr(source, "entropy_rate", None),
    )


TRAINING_PHASES = ("train", "train-to-target")  # the phases that step an optimizer


def preload(phases: set[str]) -> None:
    """Import what the workloads of ``phases`` import on their first use, ahead of the job:
    torch's optimizers import torch._dynamo when they are built (``add_param_group`` is
    wrapped by ``torch._disable_dynamo``; about 0.9 to 1.3 s on 2 cores), which every
    fresh training process pays once. A worker preloads it before it is handed a round, in
    parallel with the run's other workers, never while anything is measured
    (``carbonbench.execution.pool``)."""
    if phases & set(TRAINING_PHASES):
        import torch._dynamo  # noqa: F401


def _generation(model, phase, source, batch, prompt_len, new_tokens, device, autocast):
    if prompt_len + new_tokens > model.config.max_len:
        raise WorkloadError(
            f"prompt {prompt_len} + {new_tokens} new tokens exceed max_len "
            f"{model.config.max_len}: shorten them or build with a larger max_len"
        )
    prefill_flops, decode_flops = count_generation_flops(model, batch, prompt_len, new_tokens)
    prompt = _batch(source, batch, prompt_len, device).inputs[0]
    model.eval()
    if phase == "prefill":

        def prefill() -> None:
            with torch.inference_mode(), autocast:
                model(prompt, model.new_cache())

        return Workload(phase, prefill, Work(batch, batch * prompt_len, prefill_flops))

    cache = model.new_cache()
    with torch.inference_mode(), autocast:
        first = model(prompt, cache)[:, -1:].argmax(-1)
    prefilled = model.cache_length(cache)

    def decode() -> None:
        model.rewind(cache, prefilled)  # back to the prompt
        token = first
        with torch.inference_mode(), autocast:
            for _ in range(new_tokens):
                token = model(token, cache)[:, -1:].argmax(-1)

    return Workload(phase, decode, Work(batch, batch * new_tokens, decode_flops))
