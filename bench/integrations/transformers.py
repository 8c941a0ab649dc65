"""The energy of a transformers ``Trainer``'s training and evaluations, in its own logs.

    trainer = Trainer(model, args, train_dataset=..., callbacks=[EnergyCallback(db="r.sqlite")])
    trainer.train()

Every log gains the figures since training began (``energy/joules``, ``energy/joules_<domain>``,
``energy/co2e_grams``, ``energy/joules_per_token`` when the trainer counts tokens), so every
``report_to`` integration receives them; each evaluation's log gains its own
(``eval_energy/joules``, ...). With ``db``, the training is stored as a run, as ``track()``
stores a block. Needs the ``hf`` extra; ``import carbonbench`` does not import this module.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Literal

import transformers
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from carbonbench.energy.carbon import CarbonSettings
from carbonbench.energy.meter import EnergyMeter, Measurement
from carbonbench.errors import InputError
from carbonbench.integrations import training

log = logging.getLogger(__name__)


class EnergyCallback(training.MeterOwner, TrainerCallback):
    """Measures the training it is attached to, and each evaluation, on the local process zero
    of each host only (``state.is_local_process_zero``): that process measures the host's
    domains (CPU, DRAM, every GPU it can see) once; the other processes do nothing.

    ``every="log"`` adds the training's figures so far to every log; ``"end"`` only to the
    training's last log (its summary, with ``train_loss``). Evaluation logs always get the
    evaluation's own figures, under its metric prefix (``eval_energy/joules``), and so do the
    metrics ``evaluate()`` and ``predict()`` return. ``db``: store the training as a run (kind
    ``training``) when it ends, with each evaluation inside it in the run's metadata.

    transformers has no hook before an evaluation: one that the trainer runs during training
    is measured from the end of the step (or epoch) after which it was decided, so the training
    log at that step falls inside it; an evaluation outside training (``trainer.evaluate()``)
    from the end of its first batch, which is left out. Training's figures include the
    evaluations run inside it. A training that raises stores nothing: transformers calls no
    callback then.
    """

    def __init__(
        self,
        db: str | Path | None = None,
        label: str = "train",
        every: Literal["log", "end"] = "log",
        carbon: CarbonSettings | None = None,
        interval_s: float = 0.1,
    ) -> None:
        if every not in ("log", "end"):
            raise InputError(f"every must be 'log' or 'end', got {every!r}")
        self.db, self.label, self.every = db, label, every
        self.carbon, self.interval_s = carbon, interval_s
        self.measurement: Measurement | None = None  # the training's, once it has ended
        self.evaluations: list[dict[str, Any]] = []  # those inside the training
        self.run_id: str | None = None  # the stored run's
        self._meter: EnergyMeter | None = None
        self._training = False
        self._eval: str | None = None  # the open evaluation window
        self._eval_batches = 0
        self._evals = 0
        self._tokens_at_start = 0
        self._announced = False

    # -- training -------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_local_process_zero:
            return
        self._run_before_integrations()
        meter = self._start()
        meter.begin_window(self.label)
        self._training = True
        self._tokens_at_start = state.num_input_tokens_seen
        self.measurement, self.evaluations, self.run_id = None, [], None
        if args.eval_on_start:
            self._begin_eval()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # after DefaultFlowCallback, which has just decided whether an evaluation follows
        if self._training and control.should_evaluate and self._eval is None:
            self._begin_eval()

    on_epoch_end = on_step_end

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_local_process_zero or logs is None or self._meter is None:
            return
        if self._eval is not None and self._eval_batches:  # the evaluation's own log
            added = self._end_eval(state, logs)
        elif self._training and (self.every == "log" or "train_loss" in logs):
            added = training.figures(
                self._meter.peek(self.label), self._carbon, self._tokens(state)
            )
        else:
            return
        # Trainer.log has put a copy of the log into log_history already: extend that one too
        entry = state.log_history[-1] if state.log_history else None
        if (
            entry is not None
            and entry.get("step") == state.global_step
            and logs.keys() <= entry.keys()
        ):
            entry.update(added)
        logs.update(added)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._training or self._meter is None:
            return
        self._training = False
        try:
            if self._eval is not None:
                self._end_eval(state, {})
            self.measurement = self._meter.end_window(self.label)
            self._store(
                self.measurement,
                tokens=self._tokens(state),
                framework=f"transformers {transformers.__version__}",
                global_step=state.global_step,
                processes=args.world_size,
            )
        finally:
            self._close()

    # -- evaluation -----------------------------------------------------------------------

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_local_process_zero:
            return
        if self._eval is None:  # an evaluation outside training, or one no flow decided
            if self._meter is None:
                self._run_before_integrations()
                self._start()
            self._begin_eval()
        self._eval_batches += 1

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._after_eval(state, metrics)

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._after_eval(state, metrics)

    def _after_eval(self, state: TrainerState, metrics: dict[str, Any] | None) -> None:
        """Close an evaluation whose log did not (``predict()`` logs nothing)."""
        if not state.is_local_process_zero:
            return
        if self._eval is not None:
            added = self._end_eval(state, metrics or {})
            if metrics is not None:
                metrics.update(added)
        if not self._training:
            self._close()

    def _begin_eval(self) -> None:
        assert self._meter is not None
        self._evals += 1
        self._eval = f"{self.label}/evaluation-{self._evals}"
        self._eval_batches = 0
        self._meter.begin_window(self._eval)

    def _end_eval(self, state: TrainerState, metrics: dict[str, Any]) -> dict[str, float]:
        """The evaluation's figures, named with its metric prefix (``eval`` unless told)."""
        assert self._meter is not None and self._eval is not None
        m = self._meter.end_window(self._eval)
        self._eval = None
        prefix = next(
            (k.removesuffix("_runtime") for k in metrics if k.endswith("_runtime")), "eval"
        )
        if self._training:
            self.evaluations.append(
                training.summary(
                    m, step=state.global_step, prefix=prefix, batches=self._eval_batches
                )
            )
        return training.figures(m, self._carbon, prefix=f"{prefix}_energy/")

    # -- the meter (training.MeterOwner) --------------------------------------------------

    def _close(self) -> None:
        self._close_meter()
        self._eval = None

    def _tokens(self, state: TrainerState) -> float | None:
        """Tokens of this host since training began: the trainer counts the whole job's."""
        seen = state.num_input_tokens_seen - self._tokens_at_start
        return seen * training.host_share() if seen > 0 else None

    def _run_before_integrations(self) -> None:
        """Move this callback to just after the trainer's flow callbacks. Callbacks get each
        log's dict in turn, and the trainer puts its ``report_to`` integrations (MLflow, W&B,
        TensorBoard, ...) before the callbacks it is given: only ahead of them do the figures
        added here reach them. After DefaultFlowCallback, which decides at a step's end
        whether an evaluation follows. transformers passes callbacks no handle on the trainer:
        the handler is the caller of this hook."""
        handler = _calling_handler(self)
        if handler is None:
            log.warning(
                "carbonbench could not move its EnergyCallback before the trainer's logging "
                "integrations: those before it will not receive the energy figures"
            )
            return
        others = [c for c in handler.callbacks if c is not self]
        flow = max(
            (i + 1 for i, c in enumerate(others) if isinstance(c, DefaultFlowCallback)), default=0
        )
        # a new list: the handler may be iterating over the old one right now
        handler.callbacks = [*others[:flow], self, *others[flow:]]


def _calling_handler(callback: TrainerCallback, depth: int = 8) -> CallbackHandler | None:
    """The CallbackHandler up the stack that holds ``callback``: the one calling its hook."""
    frame = inspect.currentframe()
    try:
        for _ in range(depth):
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if isinstance(owner, CallbackHandler) and any(c is callback for c in owner.callbacks):
                return owner
            frame = frame.f_back
        return None
    finally:
        del frame
