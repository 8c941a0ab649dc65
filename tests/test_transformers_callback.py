"""The transformers callback on a real Trainer: a tiny random-weights GPT-2 trained on the CPU,
its logs, what the callbacks after it receive, and the stored run."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from carbonbench.errors import InputError
from carbonbench.integrations.training import metric_name
from carbonbench.integrations.transformers import EnergyCallback
from carbonbench.results.store import Store

VOCAB, LENGTH = 64, 16


class Tokens(torch.utils.data.Dataset):
    """Random token sequences, each its own label (the model shifts them)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Recorder(TrainerCallback):
    """Stands for a report_to integration: keeps every log it is given."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        self.logs.append(dict(logs or {}))


def tiny_trainer(tmp_path, *callbacks: TrainerCallback) -> Trainer:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=6,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        include_num_input_tokens_seen=True,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    return Trainer(
        model=GPT2LMHeadModel(config),
        args=args,
        train_dataset=Tokens(32),
        eval_dataset=Tokens(16, seed=1),
        callbacks=list(callbacks),
    )


def test_trainer_logs_carry_energy_and_the_training_is_stored(tmp_path) -> None:
    db = tmp_path / "r.sqlite"
    energy, recorder = EnergyCallback(db=db, label="tiny-gpt2"), Recorder()
    trainer = tiny_trainer(tmp_path, recorder, energy)  # the recorder registered first
    trainer.train()

    history = trainer.state.log_history
    train_logs = [e for e in history if "loss" in e]
    assert [e["step"] for e in train_logs] == [2, 4, 6]
    joules = [e["energy/joules"] for e in train_logs]
    assert 0 < joules[0] < joules[1] < joules[2] <= energy.measurement.total_energy_j
    domains = [f"energy/joules_{metric_name(d)}" for d in energy.measurement.energy_j]
    for entry in train_logs:
        assert all(entry[key] >= 0 for key in domains)
        assert entry["energy/co2e_grams"] > 0
        assert entry["energy/joules_per_token"] > 0
    assert all(":" not in key for entry in history for key in entry)  # MLflow-safe names
    (evaluation,) = [e for e in history if "eval_loss" in e]
    assert evaluation["eval_energy/joules"] > 0 and evaluation["eval_energy/co2e_grams"] > 0

    # the callbacks after this one, as report_to integrations are, got the figures
    received = [log for log in recorder.logs if "loss" in log]
    assert [log["energy/joules"] for log in received] == joules
    assert any("eval_energy/joules" in log for log in recorder.logs)
    assert trainer.callback_handler.callbacks.index(energy) < (
        trainer.callback_handler.callbacks.index(recorder)
    )

    with Store(db, create=False) as store:
        (run,) = store.runs()
        (row,) = store.rows(run.run_id)
    assert run.run_id == energy.run_id and run.status == "ok"
    assert run.metadata.kind == "training" and run.label == "tiny-gpt2"
    assert row.energy_j == pytest.approx(energy.measurement.total_energy_j) and row.energy_j > 0
    assert row.method_by_domain == energy.measurement.method
    assert set(row.method_by_domain.values()) <= {"counter", "power-sampled", "modelled"}
    assert row.tokens == trainer.state.num_input_tokens_seen == 6 * 4 * LENGTH
    (inside,) = run.metadata.extra["evaluations"]
    assert inside["step"] == 6 and inside["energy_j"] == pytest.approx(
        evaluation["eval_energy/joules"]
    )

    # an evaluation on its own: its figures in the metrics it returns, its meter closed after
    metrics = trainer.evaluate(metric_key_prefix="test")
    assert metrics["test_energy/joules"] > 0
    assert energy._meter is None


def test_every_end_adds_the_figures_to_the_summary_and_evaluations_only(tmp_path) -> None:
    energy = EnergyCallback(every="end")  # no db: nothing stored
    trainer = tiny_trainer(tmp_path, energy)
    trainer.train()
    with_energy = [e for e in trainer.state.log_history if "energy/joules" in e]
    (summary,) = with_energy
    assert "train_loss" in summary
    assert 0 < summary["energy/joules"] <= energy.measurement.total_energy_j
    assert any("eval_energy/joules" in e for e in trainer.state.log_history)
    assert energy.run_id is None and energy._meter is None


def test_other_processes_measure_nothing_and_every_is_checked(tmp_path) -> None:
    energy = EnergyCallback()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state = TrainerState(is_local_process_zero=False)
    energy.on_train_begin(args, state, TrainerControl())
    energy.on_prediction_step(args, state, TrainerControl())
    energy.on_log(args, state, TrainerControl(), logs={"loss": 1.0})
    energy.on_train_end(args, state, TrainerControl())
    assert energy._meter is None and energy.measurement is None
    with pytest.raises(InputError, match="every must be 'log' or 'end'"):
        EnergyCallback(every="step")  # type: ignore[arg-type]
