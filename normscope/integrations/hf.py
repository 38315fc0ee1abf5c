"""A Hugging Face `Trainer` callback: scan the live model every N steps and at each save, log its
norms, stop training when the check's gate trips (`pip install 'normscope[hf]'`).

    from normscope.integrations.hf import NormscopeCallback
    trainer = Trainer(model, args, train_dataset=..., callbacks=[NormscopeCallback(100)])

Scalars (`normscope/ratio/<role>/<layer>/<leaf>`, `normscope/out_of_band`, ...) go into the
trainer's log history (`trainer_state.json`) and, when the callback is given the trainer
(`NormscopeCallback(100, trainer=trainer)` or `attach(trainer)`), through `Trainer.log` to every
logger of `report_to` (TensorBoard, W&B, MLflow...). The per-role histograms of γ (and the
scalars, when they did not go through `Trainer.log` to TensorBoard) are written as TensorBoard
events into `tensorboard_dir` (default: `$TENSORBOARD_LOGGING_DIR`, else
`<output_dir>/runs/normscope`). When the gate trips, the reports are saved under
`<output_dir>/normscope/` and `control.should_training_stop` is set: the Trainer ends the run
after this step. Only the main process (`state.is_world_process_zero`) scans.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from normscope.integrations.monitor import LOG, NormMonitor, Observation


class NormscopeCallback(TrainerCallback):
    """`NormscopeCallback(every_n_steps, trainer=None, tensorboard=True, **monitor)`: the
    keywords of `normscope.integrations.monitor.NormMonitor` (gate, on_error, config, low,
    high, scope, severity, max_drift, baseline, report_dir...)."""

    def __init__(
        self,
        every_n_steps: int = 100,
        *,
        trainer: Any = None,
        tensorboard: bool = True,
        tensorboard_dir: str | os.PathLike[str] | None = None,
        **monitor: Any,
    ) -> None:
        self.monitor = NormMonitor(every_n_steps, **monitor)
        self.trainer = trainer
        self.tensorboard = tensorboard
        self.tensorboard_dir = tensorboard_dir
        self._writer: Any = None

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> Any:
        if state.is_world_process_zero and self.monitor.due(state.global_step):
            self._observe(args, state, control, model)
        return control

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.is_world_process_zero and self.monitor.on_save:
            self._observe(args, state, control, model)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return control

    def _observe(self, args: Any, state: Any, control: Any, model: Any) -> None:
        if self.monitor.seen(state.global_step):
            return
        # NOTE: the Trainer hands callbacks `trainer.model`, never its DDP/FSDP wrapper
        seen = self.monitor.observe(model, state.global_step, args.output_dir)
        self._log(args, state, seen)
        if seen.stop:
            control.should_training_stop = True

    def _log(self, args: Any, state: Any, seen: Observation) -> None:
        if not seen.scalars:
            return
        through_trainer = self.trainer is not None
        if through_trainer:
            self.trainer.log(dict(seen.scalars))
        else:
            state.log_history.append({**seen.scalars, "step": seen.step})
        if not self.tensorboard:
            return
        from normscope.errors import NormscopeError
        from normscope.events import Histogram, open_writer, summary_event

        tb_scalars = {} if through_trainer and _reports_to_tensorboard(args) else seen.scalars
        histograms = {tag: Histogram.of(values) for tag, values in seen.gammas.items()}
        try:
            if self._writer is None:
                self._writer = open_writer(self._folder(args), "the callback's TensorBoard events")
            self._writer.add_event(summary_event(seen.step, time.time(), tb_scalars, histograms))
            self._writer.flush()
        except NormscopeError as exc:  # no tensorboard package, or the folder cannot be made
            LOG.warning("normscope: no TensorBoard events: %s", exc.message)
            self.tensorboard = False

    def _folder(self, args: Any) -> Path:
        if self.tensorboard_dir is not None:
            return Path(self.tensorboard_dir)
        env = os.environ.get("TENSORBOARD_LOGGING_DIR")
        if env:
            return Path(os.path.expanduser(env))
        return Path(args.output_dir) / "runs" / "normscope"


def attach(trainer: Any, every_n_steps: int = 100, **options: Any) -> NormscopeCallback:
    """Add a callback that logs through `trainer.log` (every `report_to` logger) to `trainer`."""
    callback = NormscopeCallback(every_n_steps, trainer=trainer, **options)
    trainer.add_callback(callback)
    return callback


def _reports_to_tensorboard(args: Any) -> bool:
    report_to = getattr(args, "report_to", None) or []
    return "tensorboard" in ([report_to] if isinstance(report_to, str) else report_to) or (
        "all" in report_to
    )
