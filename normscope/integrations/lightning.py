"""A Lightning callback: scan the live model every N steps and at each checkpoint save, log its
norms to the trainer's loggers, stop training when the check's gate trips
(`pip install 'normscope[lightning]'`).

    from normscope.integrations.lightning import NormscopeCallback
    trainer = lightning.Trainer(callbacks=[NormscopeCallback(100)], ...)

Scalars (`normscope/ratio/<role>/<layer>/<leaf>`, `normscope/out_of_band`, ...) go to every
logger's `log_metrics`; the per-role histograms of γ to every logger that has a TensorBoard
writer (`TensorBoardLogger`: `experiment.add_histogram`). The LightningModule is scanned with its
names as they are (`model.model.layers.0...` is still layer 0); the config comes from
`model_config`, else the module's `.config`, else the first submodule with a transformers
config. Rank 0 scans; the decision to stop is shared by every rank (as EarlyStopping does). When
the gate trips, the reports are saved under `<default_root_dir>/normscope/` and
`trainer.should_stop` is set.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

from normscope.integrations.monitor import NormMonitor, Observation


class NormscopeCallback(Callback):
    """`NormscopeCallback(every_n_steps, **monitor)`: the keywords of
    `normscope.integrations.monitor.NormMonitor` (gate, on_error, config, low, high, scope,
    severity, max_drift, baseline, report_dir, model_config...)."""

    def __init__(self, every_n_steps: int = 100, **monitor: Any) -> None:
        self.monitor = NormMonitor(every_n_steps, **monitor)
        self._decided: int | None = None
        """The last step decided, on every rank (rank 0 alone scans): each rank takes part in
        each decision exactly once, or the collective would wait forever."""

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.monitor.every_n_steps == 0:
            self._observe(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.monitor.on_save:
            self._observe(trainer, pl_module)

    def _observe(self, trainer: Any, pl_module: Any) -> None:
        if self._decided == trainer.global_step:
            return
        self._decided = trainer.global_step
        stop = False
        if trainer.is_global_zero:
            seen = self.monitor.observe(
                pl_module, trainer.global_step, trainer.default_root_dir, _config_of(pl_module)
            )
            _log(trainer, seen)
            stop = seen.stop
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            trainer.should_stop = True


def _log(trainer: Any, seen: Observation) -> None:
    if not seen.scalars:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(seen.scalars), step=seen.step)
        add_histogram = getattr(getattr(logger, "experiment", None), "add_histogram", None)
        if callable(add_histogram):
            for tag, values in sorted(seen.gammas.items()):
                add_histogram(tag, values, global_step=seen.step)


def _config_of(module: Any) -> Any:
    """The module's transformers config, or the first submodule's (None: the names decide)."""
    config = getattr(module, "config", None)
    if callable(getattr(config, "to_dict", None)):
        return config
    for child in module.modules():
        config = getattr(child, "config", None)
        if callable(getattr(config, "to_dict", None)):
            return config
    return None
