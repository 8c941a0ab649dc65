"""The reference architectures: registry, sizes, shapes, and reference/fused equivalence."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from carbonbench import models
from carbonbench.models.recurrent import ReferenceRecurrent

NAMES = list(models.ARCHITECTURES)
EXPECTED = {"rnn", "lstm", "gru", "transformer", "seq2seq-lstm", "gpt"}


def _pair(name: str, **overrides: object) -> tuple[nn.Module, nn.Module]:
    """Reference and fused variants with the reference's weights loaded into the fused one."""
    torch.manual_seed(0)
    reference = models.build(name, "tiny", "reference", **overrides)
    fused = models.build(name, "tiny", "fused", **overrides)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def test_registry_lists_every_architecture() -> None:
    assert set(models.ARCHITECTURES) >= EXPECTED
    for arch in models.ARCHITECTURES.values():
        assert set(arch.sizes) == set(models.SIZES)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: models.build("mamba"), "unknown architecture 'mamba'; valid: rnn, lstm"),
        (lambda: models.build("gpt", size="huge"), "unknown size 'huge' for gpt; valid: tiny"),
        (lambda: models.build("gpt", impl="triton"), "unknown impl 'triton'; valid: reference"),
        (lambda: models.build("lstm", heads=4), "unknown config field(s) heads for lstm; valid:"),
        (lambda: models.build("gpt", colour=1), "valid: vocab, d_model, heads, layers, hidden"),
        (lambda: models.build("gpt", d_model=130, heads=4), "must be divisible by heads"),
        (lambda: models.build("gru", layers=0), "layers must be a positive integer"),
        (lambda: models.build("rnn", dropout=1.5), "dropout must be in [0, 1)"),
        (lambda: models.example_batch("nope", 2, 3), "unknown architecture 'nope'"),
    ],
)
def test_bad_input_raises_value_error_naming_valid_choices(call, message: str) -> None:
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def test_a_builder_named_by_string_is_imported_on_first_build() -> None:
    """What keeps records torch-free: the built-ins name their builders."""
    record = models.architecture("gpt")
    assert record.builders["fused"] == "carbonbench.models.gpt:gpt_fused"
    assert type(models.build("gpt", impl="fused")).__name__ == "GPT"
    with pytest.raises(models.ArchitectureError, match=r"give a callable or 'package\.module:"):
        dataclasses.replace(record, builders={"fused": "carbonbench.models.gpt.gpt_fused"})
    missing = dataclasses.replace(record, builders={"fused": "carbonbench.models.nope:build"})
    with pytest.raises(
        models.ArchitectureError, match=r"cannot import 'carbonbench\.models\.nope'"
    ):
        missing.builder("fused")
    wrong = dataclasses.replace(record, builders={"fused": "carbonbench.models.gpt:nope"})
    with pytest.raises(models.ArchitectureError, match=r"carbonbench\.models\.gpt:nope is not a"):
        wrong.builder("fused")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("size", "low", "high"), [("tiny", 1e5, 1e6), ("small", 10e6, 20e6), ("base", 80e6, 120e6)]
)
def test_sizes_have_the_promised_parameter_counts(name: str, size: str, low, high) -> None:
    with torch.device("meta"):  # base models without allocating 400 MB each
        model = models.build(name, size)
    assert low <= models.count_parameters(model) <= high


def test_overrides_reach_the_config() -> None:
    model = models.build("gpt", "tiny", d_model=64, heads=2, layers=1, vocab=97, max_len=32)
    assert (model.config.d_model, model.config.layers, model.config.vocab) == (64, 1, 97)
    assert model(*models.example_batch(model, 2, 32)).shape == (2, 32, 97)
    with pytest.raises(ValueError, match="exceeds max_len 32"):
        model(*models.example_batch(model, 2, 33))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("impl", models.IMPLS)
def test_logits_shape_and_attributes(name: str, impl: str) -> None:
    model = models.build(name, "tiny", impl)
    assert (model.arch, model.impl) == (name, impl)
    inputs = models.example_batch(model, 3, 11)
    assert model(*inputs).shape == (3, 11, model.config.vocab)


def test_example_batch_is_reproducible_and_in_range() -> None:
    a = models.example_batch("transformer", 4, 9, vocab=50)
    b = models.example_batch("transformer", 4, 9, vocab=50)
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(t.dtype == torch.long and t.shape == (4, 9) for t in a)
    assert all(int(t.min()) >= 0 and int(t.max()) < 50 for t in a)
    (tokens,) = models.example_batch("gpt", 2, 5, device="meta")
    assert tokens.device.type == "meta"
    with pytest.raises(ValueError, match="must be positive"):
        models.example_batch("gpt", 0, 5)


@pytest.mark.parametrize("name", NAMES)
def test_variants_share_state_dict_keys_shapes_and_initial_weights(name: str) -> None:
    torch.manual_seed(0)
    reference = models.build(name, "tiny", "reference").state_dict()
    torch.manual_seed(0)
    fused = models.build(name, "tiny", "fused").state_dict()
    assert list(reference) == list(fused)
    for key in reference:
        assert reference[key].shape == fused[key].shape, key
        assert torch.equal(reference[key], fused[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_variants_agree_on_logits_and_gradients(name: str) -> None:
    reference, fused = _pair(name)
    inputs = models.example_batch(reference, 4, 24, seed=1)
    targets = models.example_batch(reference, 4, 24, seed=2)[0]
    losses = []
    for model in (reference, fused):
        logits = model(*inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        losses.append((logits, loss))
    assert (losses[0][0] - losses[1][0]).abs().max().item() <= 1e-4
    for (key, p), q in zip(reference.named_parameters(), fused.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, key
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=key)


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    layers=st.integers(1, 3),
    batch=st.integers(1, 3),
    length=st.integers(1, 9),
    width=st.sampled_from([8, 16, 24]),
)
def test_variants_agree_across_shapes(name, layers, batch, length, width) -> None:
    overrides = {"layers": layers, "d_model": width, "hidden": 2 * width, "vocab": 37}
    if models.ARCHITECTURES[name].config_cls is models.TransformerConfig:
        overrides["heads"] = 4
    reference, fused = _pair(name, **overrides)
    inputs = models.example_batch(reference, batch, length)
    with torch.no_grad():
        assert (reference(*inputs) - fused(*inputs)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_dropout_between_layers_is_applied_in_training_only(name: str) -> None:
    reference, fused = _pair(name, dropout=0.5)
    (tokens,) = models.example_batch(reference, 2, 6)
    reference.eval()
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(tokens), fused(tokens), atol=1e-5, rtol=1e-4)
        reference.train()
        assert not torch.allclose(reference(tokens), reference(tokens))


def test_lstm_step_follows_the_standard_equations() -> None:
    """One step by hand: output gate from x_t and h_{t-1}, c_t = f c + i g, h_t = o tanh(c_t)."""
    torch.manual_seed(0)
    cell = ReferenceRecurrent("lstm", 3, 2, 1, 0.0)
    x, h0, c0 = torch.randn(1, 1, 3), torch.randn(1, 1, 2), torch.randn(1, 1, 2)
    _, (h1, c1) = cell(x, (h0, c0))
    pre = cell.weight_ih_l0 @ x[0, 0] + cell.bias_ih_l0 + cell.weight_hh_l0 @ h0[0, 0]
    pre = pre + cell.bias_hh_l0
    i, f, g, o = pre[0:2].sigmoid(), pre[2:4].sigmoid(), pre[4:6].tanh(), pre[6:8].sigmoid()
    c_expected = f * c0[0, 0] + i * g
    torch.testing.assert_close(c1[0, 0], c_expected)
    torch.testing.assert_close(h1[0, 0], o * torch.tanh(c_expected))


def test_gru_step_interpolates_between_state_and_candidate() -> None:
    torch.manual_seed(0)
    cell = ReferenceRecurrent("gru", 3, 2, 1, 0.0)
    x, h0 = torch.randn(1, 1, 3), torch.randn(1, 1, 2)
    _, h1 = cell(x, h0)
    gx = cell.weight_ih_l0 @ x[0, 0] + cell.bias_ih_l0
    gh = cell.weight_hh_l0 @ h0[0, 0] + cell.bias_hh_l0
    r, z = (gx[0:2] + gh[0:2]).sigmoid(), (gx[2:4] + gh[2:4]).sigmoid()
    n = torch.tanh(gx[4:6] + r * gh[4:6])
    torch.testing.assert_close(h1[0, 0], (1 - z) * n + z * h0[0, 0])


@pytest.mark.parametrize("impl", models.IMPLS)
@pytest.mark.parametrize("name", ["gpt", "transformer"])
def test_decoders_are_causal(name: str, impl: str) -> None:
    """Changing the token at position 5 leaves the logits at positions 0..4 unchanged."""
    model = models.build(name, "tiny", impl).eval()
    inputs = list(models.example_batch(model, 2, 10))
    changed = [t.clone() for t in inputs]
    changed[-1][:, 5] = (changed[-1][:, 5] + 1) % model.config.vocab
    with torch.no_grad():
        before, after = model(*inputs), model(*changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


@pytest.mark.parametrize("name", ["transformer", "seq2seq-lstm"])
def test_encoder_decoders_read_the_source(name: str) -> None:
    model = models.build(name, "tiny", "fused").eval()
    src, tgt_in = models.example_batch(model, 2, 8)
    with torch.no_grad():
        a = model(src, tgt_in)
        b = model(src.flip(1), tgt_in)
    assert not torch.allclose(a, b)


def test_tied_output_projection_is_one_parameter() -> None:
    for name, embedding in (("gpt", "tok"), ("transformer", "embed")):
        model = models.build(name)
        assert model.head.weight is getattr(model, embedding).weight
