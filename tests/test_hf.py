"""Hugging Face architectures (``hf:gpt2``, ``hf:bert``, ``hf:t5``) through the harness at
tiny size; skipped without transformers (CI installs the ``hf`` extra), except the refusal."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from carbonbench import models
from carbonbench.cli import main
from carbonbench.execution.data import MarkovSource, MaskingTask
from tests.helpers import fast_suite, run

HF = ("hf:gpt2", "hf:bert", "hf:t5")


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers", reason="the hf extra is not installed")


def test_without_transformers_an_hf_name_says_which_extra(monkeypatch, capsys) -> None:
    monkeypatch.setattr("carbonbench.models.hf.available", lambda: False)
    with pytest.raises(models.ArchitectureError) as error:
        models.architecture("hf:gpt2")
    assert str(error.value) == "hf:gpt2 needs transformers: pip install 'carbonbench[hf]'"
    with pytest.raises(models.ArchitectureError, match="the Hugging Face ones: hf:gpt2, hf:bert"):
        models.architecture("hf:llama")
    assert main(["models"]) == 0
    assert "hf:gpt2, hf:bert, hf:t5: pip install 'carbonbench[hf]'" in capsys.readouterr().out


def test_the_three_run_train_infer_and_generation_through_the_harness(
    transformers, tmp_path
) -> None:
    suite = fast_suite(archs=HF, phases=("train", "infer", "generate"))
    assert {(c.arch, c.phase) for c in suite.cases} == {
        ("hf:gpt2", "train"),
        ("hf:gpt2", "infer"),
        ("hf:gpt2", "prefill"),
        ("hf:gpt2", "decode"),
        ("hf:bert", "train"),
        ("hf:bert", "infer"),
        ("hf:t5", "train"),
        ("hf:t5", "infer"),
        ("hf:t5", "prefill"),
        ("hf:t5", "decode"),
    }
    status, runner, store = run(suite, tmp_path)
    rows = store.rows(runner.run_id)
    assert status == "ok" and all(r.status == "ok" for r in rows)
    assert all(r.flops and r.flops > 0 and r.energy_j > 0 for r in rows)
    by = {(r.arch, r.phase): r for r in rows}
    assert by[("hf:bert", "train")].tokens == by[("hf:bert", "train")].steps * 2 * 8  # all
    assert by[("hf:t5", "train")].src_tokens == by[("hf:t5", "train")].tokens  # target tokens
    assert by[("hf:gpt2", "decode")].tokens == by[("hf:gpt2", "decode")].steps * 2 * 4


@pytest.mark.parametrize("name", HF)
def test_reference_and_fused_share_weights_and_agree(transformers, name) -> None:
    torch.manual_seed(0)
    reference = models.build(name, "tiny", "reference").eval()
    fused = models.build(name, "tiny", "fused").eval()
    fused.load_state_dict(reference.state_dict())
    inputs = models.example_batch(reference, 2, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(*inputs), reference(*inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["hf:gpt2", "hf:t5"])
def test_generation_through_the_cache_matches_a_full_forward(transformers, name) -> None:
    torch.manual_seed(0)
    model = models.build(name, "tiny", "fused").eval()
    prompt = torch.randint(0, 1000, (2, 6))
    token = torch.randint(0, 1000, (2, 1))
    with torch.no_grad():
        cache = model.new_cache()
        model(prompt, cache)
        mark = model.cache_length(cache)
        step = model(token, cache)[:, -1]
        model.rewind(cache, mark)
        assert model.cache_length(cache) == mark
        again = model(token, cache)[:, -1]
        if name == "hf:gpt2":
            full = model(torch.cat([prompt, token], 1))[:, -1]
        else:  # the decoder's input: the start token, then the new one
            start = torch.zeros(2, 1, dtype=torch.long)
            full = model(prompt, torch.cat([start, token], 1))[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, step)


def test_base_is_the_published_size(transformers) -> None:
    with torch.device("meta"):
        counts = {n: models.count_parameters(models.build(n, "base", "fused")) for n in HF}
    assert counts["hf:gpt2"] == pytest.approx(124.4e6, rel=0.01)  # GPT-2 small
    assert counts["hf:bert"] == pytest.approx(110e6, rel=0.02)  # BERT-base with its MLM head
    assert counts["hf:t5"] == pytest.approx(222.9e6, rel=0.01)  # T5-base


def test_nothing_reaches_the_network(transformers, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in HF:
        model = models.build(name, "tiny", "fused")
        with torch.no_grad():
            model(*models.example_batch(model, 1, 4))


def test_models_lists_them_with_their_source(transformers, capsys) -> None:
    assert main(["models", "--json"]) == 0  # listed without being asked for first
    listed = {row["arch"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["hf:bert"]["kind"] == "masked-lm"
    assert listed["hf:t5"]["generates"] and not listed["hf:bert"]["generates"]
    assert listed["hf:gpt2"]["source"] == f"transformers {transformers.__version__}"


def test_masking_hides_some_tokens_and_targets_only_those() -> None:
    task = MaskingTask(MarkovSource(63, seed=1), mask_id=63)
    batch = task.batch(16, 32)
    (inputs,) = batch.inputs
    masked = inputs == 63
    assert masked.any(1).all() and 0.05 < masked.float().mean() < 0.3
    assert (batch.targets[~masked] == -100).all() and (batch.targets[masked] < 63).all()
