"""The Lightning callback on a real Trainer: a tiny module trained on the CPU, the figures in
its CSV logger's metrics, and the stored run."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from carbonbench.integrations.lightning import EnergyCallback
from carbonbench.integrations.training import metric_name
from carbonbench.results.store import Store


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(n: int) -> DataLoader:
    generator = torch.Generator().manual_seed(n)
    data = TensorDataset(torch.randn(n, 8, generator=generator), torch.randn(n, 1))
    return DataLoader(data, batch_size=8)


def test_lightning_logs_carry_energy_and_the_training_is_stored(tmp_path) -> None:
    db = tmp_path / "r.sqlite"
    energy = EnergyCallback(db=db, label="tiny", tokens=lambda batch: batch[0].shape[0])
    trainer = pl.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        log_every_n_steps=2,
        val_check_interval=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[energy],
    )
    trainer.fit(Tiny(), loader(64), loader(16))

    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    columns = set(rows[0])
    domains = {f"energy/joules_{metric_name(d)}" for d in energy.measurement.energy_j}
    assert {"energy/joules", "energy/co2e_grams", "energy/joules_per_token"} | domains <= columns
    assert {"val_energy/joules", "val_energy/co2e_grams"} <= columns
    joules = [float(r["energy/joules"]) for r in rows if r["energy/joules"]]
    assert len(joules) == 3 and 0 < joules[0] < joules[1] < joules[2]
    validations = [float(r["val_energy/joules"]) for r in rows if r["val_energy/joules"]]
    assert len(validations) == 2 and all(j > 0 for j in validations)

    with Store(db, create=False) as store:
        (run,) = store.runs()
        (row,) = store.rows(run.run_id)
    assert run.run_id == energy.run_id and run.status == "ok"
    assert run.metadata.kind == "training" and run.label == "tiny"
    assert row.energy_j == pytest.approx(energy.measurement.total_energy_j) and row.energy_j > 0
    assert row.method_by_domain == energy.measurement.method
    assert set(row.method_by_domain.values()) <= {"counter", "power-sampled", "modelled"}
    assert row.tokens == 6 * 8
    assert [v["step"] for v in run.metadata.extra["evaluations"]] == [3, 6]
    assert energy._meter is None
