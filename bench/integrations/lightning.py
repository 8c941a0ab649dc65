"""The energy of a Lightning ``Trainer``'s training and validation, in its own logs.

    trainer = Trainer(max_epochs=3, callbacks=[EnergyCallback(db="r.sqlite")])
    trainer.fit(module, data)

At the trainer's ``log_every_n_steps`` the figures since training began go through
``pl_module.log_dict`` to every logger (``energy/joules``, ``energy/joules_<domain>``,
``energy/co2e_grams``, ``energy/joules_per_token`` when ``tokens`` counts them); each
validation logs its own (``val_energy/joules``, ...). With ``db``, the training is stored as a
run, as ``track()`` stores a block. Needs the ``lightning`` extra (``pytorch_lightning`` serves
where only that is installed); ``import carbonbench`` does not import this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older distribution, alone
    try:
        import pytorch_lightning as pl
    except ImportError:
        raise ImportError(
            "carbonbench's Lightning callback needs lightning: pip install 'carbonbench[lightning]'"
        ) from None

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.integrations import training

log = logging.getLogger(__name__)


class EnergyCallback(training.MeterOwner, pl.Callback):
    """Measures the training it is attached to, and each validation, on the local rank 0 of
    each host only (``trainer.local_rank == 0``): that process measures the host's domains
    (CPU, DRAM, every GPU it can see) once; the other processes do nothing. Its figures are
    logged with ``rank_zero_only=True``, so the loggers show those of global rank 0's host;
    every host's run is stored (with ``db``) where that host's rank 0 writes.

    ``tokens``: how many tokens a training batch holds (``lambda batch: batch["ids"].numel()``),
    for joules per token; under several processes a host's tokens are its local rank 0's
    count times its processes. Sanity-check validation is not measured. A training that raises
    is stored too, its run marked failed. Training's figures include the validations run
    inside it.
    """

    def __init__(
        self,
        db: str | Path | None = None,
        label: str = "train",
        carbon: CarbonSettings | None = None,
        interval_s: float = 0.1,
        tokens: Callable[[Any], int] | None = None,
    ) -> None:
        self.db, self.label, self.carbon, self.interval_s = db, label, carbon, interval_s
        self.count_tokens = tokens
        self.measurement: Measurement | None = None  # the training's, once it has ended
        self.evaluations: list[dict[str, Any]] = []  # the validations inside the training
        self.run_id: str | None = None  # the stored run's
        self._meter: EnergyMeter | None = None
        self._training = False
        self._val: str | None = None  # the open validation window
        self._vals = 0
        self._tokens = 0
        self._announced = False

    # -- training -------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.local_rank != 0:
            return
        self._start().begin_window(self.label)
        self._training, self._tokens = True, 0
        self.measurement, self.evaluations, self.run_id = None, [], None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._training or self._meter is None:
            return
        if self.count_tokens is not None:
            self._tokens += int(self.count_tokens(batch))
        if _logs_now(trainer):
            m = self._meter.peek(self.label)
            figures = training.figures(m, self._carbon, self._host_tokens(trainer))
            pl_module.log_dict(figures, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._finish(trainer, f"{type(exception).__name__}: {exception}")

    def _finish(self, trainer: pl.Trainer, error: str | None) -> None:
        if not self._training or self._meter is None:
            self._close()
            return
        self._training = False
        try:
            if self._val is not None:
                self._meter.end_window(self._val)
                self._val = None
            self.measurement = self._meter.end_window(self.label)
            self._store(
                self.measurement,
                tokens=self._host_tokens(trainer),
                framework=f"{pl.__name__} {pl.__version__}",
                global_step=trainer.global_step,
                processes=trainer.world_size,
                error=error,
            )
        finally:
            self._close()

    # -- validation -----------------------------------------------------------------------

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.local_rank != 0 or trainer.sanity_checking:
            return
        self._vals += 1
        self._val = f"{self.label}/validation-{self._vals}"
        self._start().begin_window(self._val)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val is None or self._meter is None:
            return
        m = self._meter.end_window(self._val)
        self._val = None
        if self._training:
            self.evaluations.append(training.summary(m, step=trainer.global_step))
        figures = training.figures(m, self._carbon, prefix="val_energy/")
        pl_module.log_dict(figures, on_step=False, on_epoch=True, rank_zero_only=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._training:  # trainer.validate(): its own meter
            self._close()

    # -- the meter (training.MeterOwner) --------------------------------------------------

    def _close(self) -> None:
        self._close_meter()
        self._val = None

    def _host_tokens(self, trainer: pl.Trainer) -> float | None:
        """This host's tokens: local rank 0 counts its own batches, its host runs
        ``num_devices`` processes."""
        return self._tokens * trainer.num_devices if self._tokens else None


def _logs_now(trainer: pl.Trainer) -> bool:
    """Whether the trainer writes this step's logged values to its loggers: its own decision
    (what its LearningRateMonitor asks), else ``log_every_n_steps`` over optimizer steps."""
    connector = getattr(trainer, "_logger_connector", None)
    decided = getattr(connector, "should_update_logs", None)
    if isinstance(decided, bool):
        return decided
    every = trainer.log_every_n_steps
    return every > 0 and trainer.global_step % every == 0
