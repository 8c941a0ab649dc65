"""FLOPs counted by torch.utils.flop_counter against the analytic counts."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from carbonbench import models
from carbonbench.models.flops import analytic_flops, count_flops

NAMES = list(models.ARCHITECTURES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("impl", models.IMPLS)
def test_counted_flops_match_the_analytic_count(name: str, impl: str) -> None:
    model = models.build(name, "tiny", impl)
    counted = count_flops(model, batch_size=4, seq_len=32)
    analytic = analytic_flops(name, model.config, 4, 32)
    assert counted.forward > 0 and counted.train_step > 0
    assert counted.forward == pytest.approx(analytic, rel=0.10)
    # backward costs about twice the forward: a training step is about 3x
    assert counted.train_step == pytest.approx(3 * analytic, rel=0.10)


@pytest.mark.parametrize("name", ["gpt", "transformer"])
def test_counts_at_base_size_without_allocating(name: str) -> None:
    with torch.device("meta"):
        model = models.build(name, "base")
    counted = count_flops(model, batch_size=8, seq_len=512)
    assert counted.forward == pytest.approx(analytic_flops(name, model.config, 8, 512), rel=0.10)


def test_gpt_matches_kaplan_et_al() -> None:
    """Kaplan et al. (2020): forward FLOPs per token ~ 2N + 2 n_layer n_ctx d_model, N the
    parameters of the matrix products (their Table 1 keeps the de-embedding 2 d_model n_vocab)."""
    model = models.build("gpt", "small")
    c, n_ctx, batch = model.config, 256, 2
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    per_token = 2 * n + 2 * c.layers * n_ctx * c.d_model
    counted = count_flops(model, batch, n_ctx)
    assert counted.forward / (batch * n_ctx) == pytest.approx(per_token, rel=0.10)
    assert counted.train_step / (batch * n_ctx) == pytest.approx(3 * per_token, rel=0.10)


@pytest.mark.parametrize("name", ["rnn", "gru", "gpt", "transformer"])
def test_fused_kernels_visible_to_the_counter_count_the_same(name: str) -> None:
    """Where the counter can see the fused variant's arithmetic, it equals the reference twin's;
    this is what justifies counting every model on its reference twin."""
    model = models.build(name, "tiny", "fused")
    inputs = [t.to("meta") for t in models.example_batch(model, 2, 16)]
    with torch.device("meta"):
        twin = models.build(name, "tiny", "fused")
    with FlopCounterMode(display=False) as counter:
        twin(*inputs)
    assert counter.get_total_flops() == count_flops(model, 2, 16).forward
