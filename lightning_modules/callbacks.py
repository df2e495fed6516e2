"""The Lightning callbacks of a fit, in one place (Lightning's own layout):

- `KeepBestWeights`: the best validation epoch's weights, restored at the end;
- `StopBelowThreshold`: stops a trial that clearly cannot reach the floor;
- `TrainWhileImproving`: trains on past the epoch cap while validation still improves;
- `StopAtRungs`: at each rung's epoch, asks whether the run may go on (multi-fidelity).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
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


class TrainWhileImproving(Callback):
    """Trains past `max_epochs` while the monitored value still improves, up to `limit` epochs.

    A search's epoch cap is sized for the baseline; a small network is often still improving
    there, and a trial cut off mid-descent is a defect of the search, not a result. When the
    last planned epoch ends and the best value came within the last `patience` epochs (so early
    stopping did not end the run), the run gets `extension` more epochs in a fresh cosine cycle
    from `restart_share` of the previous cycle's starting rate (a warm restart, as in SGDR); a
    cycle that brings no new best ends through early stopping, and the best weights are kept.

    Args:
        monitor: the logged validation value early stopping watches, e.g. "val_loss".
        mode: "min" or "max".
        limit: the most epochs the run may reach, cycles included.
    """

    def __init__(
        self,
        monitor: str,
        mode: str,
        *,
        patience: int,
        limit: int,
        extension: int,
        restart_share: float = 0.5,
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.limit = limit
        self.extension = max(1, extension)
        self.restart_share = restart_share
        self.best: float | None = None
        self.best_epoch = -1
        self.extensions = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current = fit_epoch_value(trainer, self.monitor)
        if current is None:
            return
        if self.best is None or (
            current < self.best if self.mode == "min" else current > self.best
        ):
            self.best, self.best_epoch = current, trainer.current_epoch
        planned = trainer.fit_loop.max_epochs
        if planned is None:
            return
        last = trainer.current_epoch + 1 >= planned
        improving = trainer.current_epoch - self.best_epoch < self.patience
        if last and improving and planned < self.limit:
            extra = min(self.extension, self.limit - planned)
            trainer.fit_loop.max_epochs = planned + extra
            self.extensions += 1
            self._restart_schedule(trainer, extra)

    def _restart_schedule(self, trainer: pl.Trainer, epochs: int) -> None:
        """A new cosine cycle over the added epochs, from `restart_share` of the initial rate."""
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            for group in optimizer.param_groups:
                start = group.get("initial_lr", group["lr"]) * self.restart_share
                group["lr"] = group["initial_lr"] = start
            # The module steps the schedule once at the end of this epoch, so the new cycle has
            # one step more than the epochs it covers and reaches its low on the last of them.
            config.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=epochs + 1
            )


class KeepBestWeights(Callback):
    """Keeps the weights of the best validation epoch in memory and restores them at the end.

    Early stopping alone would hand back the last epoch's weights, `patience` epochs past the
    best; a checkpoint file per trial would cost disk and time for no gain.
    """

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_epoch = -1
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current = fit_epoch_value(trainer, self.monitor)
        if current is None:
            return
        better = self.best is None or (
            current < self.best if self.mode == "min" else current > self.best
        )
        if better:
            self.best, self.best_epoch = current, trainer.current_epoch
            self._state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state)


class StopAtRungs(Callback):
    """At the end of each rung's epoch, hands the best monitored value so far to `decide`, and
    stops the fit when it answers False (successive halving: only the better share goes on).

    The callback knows nothing of how the answer is reached (the search compares the value
    with other runs' at the same rung), so a fit stays free of studies and storages.

    Args:
        monitor: a logged validation metric, e.g. "val_accuracy".
        rungs: epoch counts, ascending; rung k is reached after rungs[k] epochs.
        decide: (rung index, best value so far, the network's parameters) -> whether the
            run goes on.
    """

    def __init__(
        self,
        monitor: str,
        rungs: Sequence[int],
        decide: Callable[[int, float, int], bool],
        *,
        higher_is_better: bool,
    ) -> None:
        self.monitor = monitor
        self.rungs = tuple(rungs)
        self.decide = decide
        self.higher_is_better = higher_is_better
        self.best: float | None = None
        # The rung index the run stopped at, and the epochs it had then; None: not stopped.
        self.stopped_rung: int | None = None
        self.stopped_epoch: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current = fit_epoch_value(trainer, self.monitor)
        if current is None or self.stopped_rung is not None:
            return
        if self.best is None or (
            current > self.best if self.higher_is_better else current < self.best
        ):
            self.best = current
        epochs = trainer.current_epoch + 1
        if epochs not in self.rungs or trainer.should_stop:
            return
        rung = self.rungs.index(epochs)
        parameters = sum(p.numel() for p in pl_module.parameters())
        if not self.decide(rung, self.best, parameters):
            trainer.should_stop = True
            self.stopped_rung, self.stopped_epoch = rung, epochs
