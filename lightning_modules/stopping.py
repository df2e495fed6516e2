"""Stop training that clearly cannot reach a required validation metric."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def fit_epoch_value(trainer: pl.Trainer, monitor: str) -> float | None:
    """The monitored value after a training epoch's validation; None outside `fit` epochs.

    Only epochs of `fit` count: the sanity check before it and the evaluations after it must
    not move a callback's best.
    """
    if trainer.sanity_checking or trainer.state.fn != "fit":
        return None
    value = trainer.callback_metrics.get(monitor)
    return None if value is None else float(value)


class StopBelowThreshold(Callback):
    """Stops `fit` once the best validation value so far is still on the wrong side of a threshold.

    Multi-objective Optuna studies cannot prune through `Trial.should_prune`, so a candidate that
    is hopeless for an accuracy floor is stopped here instead, after a grace period that gives
    slow starters a chance.

    Args:
        monitor: a logged validation metric, e.g. "val_accuracy".
        threshold: the value the metric must reach (already including any margin).
        grace_epochs: epochs always trained before the check starts.
    """

    def __init__(
        self, monitor: str, threshold: float, *, higher_is_better: bool, grace_epochs: int
    ) -> None:
        self.monitor = monitor
        self.threshold = threshold
        self.higher_is_better = higher_is_better
        self.grace_epochs = grace_epochs
        self.best: float | None = None
        self.stopped_epoch: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current = fit_epoch_value(trainer, self.monitor)
        if current is None:
            return
        if self.best is None:
            self.best = current
        else:
            self.best = (
                max(self.best, current) if self.higher_is_better else min(self.best, current)
            )
        if trainer.current_epoch + 1 < self.grace_epochs:
            return
        hopeless = (
            self.best < self.threshold if self.higher_is_better else self.best > self.threshold
        )
        if hopeless:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
