"""One LightningModule that trains any tabular network, and a `fit` that runs it.

Lightning runs only the loop: the network is a plain nn.Module handed in, and train, validation
and test share one step. Metrics come from torchmetrics and fit the task.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping
from torch import nn
from torch.nn import functional as F

from lightning_modules import anomaly
from lightning_modules.callbacks import KeepBestWeights, TrainWhileImproving
from lightning_modules.data import TabularDataModule
from lightning_modules.distillation import Distillation, distilled_loss
from lightning_modules.metrics import HIGHER_IS_BETTER
from lightning_modules.task import Task
from lightning_modules.task_metrics import metric_names, task_metrics


class TabularModule(pl.LightningModule):
    """Trains a network on batches {"x_num", "x_cat", "y"} with the task's loss and metrics.

    Args:
        target_mean, target_std: regression targets are standardised for training; metrics are
            reported on the original scale.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        task: Task,
        n_classes: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 50,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        # Manual optimisation: a training step receives a group of batches and steps the
        # optimiser once per batch (see `TRAIN_BATCHES_PER_STEP`).
        self.automatic_optimization = False
        self.network = network
        self.task = task
        self.val_metrics = task_metrics(self.task, n_classes).clone(prefix="val_")
        self.test_metrics = task_metrics(self.task, n_classes).clone(prefix="test_")
        # The epoch's sum of train loss x rows, and its rows; logged once per epoch.
        self._train_loss_sum: torch.Tensor | None = None
        self._train_rows = 0

    @classmethod
    def for_data(
        cls, network: nn.Module, data: TabularDataModule, config: FitSettings | None = None
    ) -> TabularModule:
        """The module for `network` on `data`: task, classes and target scale from the data,
        optimiser settings from `config` (defaults when None, e.g. for evaluation only)."""
        config = config if config is not None else FitSettings()
        prep = data.preprocessor
        distill = config.distill or Distillation(weight=0.0)
        return cls(
            network,
            task=data.task,
            n_classes=data.n_classes,
            lr=config.lr,
            weight_decay=config.weight_decay,
            max_epochs=config.max_epochs,
            target_mean=prep.target_mean,
            target_std=prep.target_std,
            distill_weight=distill.weight,
            distill_temperature=distill.temperature,
        )

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.network(x_num, x_cat)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        output = self.network(batch["x_num"], batch["x_cat"])
        y = batch["y"]
        if self.task.is_anomaly:
            return self._anomaly_step(output, batch, stage)
        if self.task.is_regression:
            loss = F.mse_loss(output, y)
        else:
            per_row = F.cross_entropy(output, y, reduction="none")
            loss = per_row.mean()
        batch_size = len(y)
        if stage == "train":
            if "teacher" in batch:
                loss = self._distilled(loss, output, batch["teacher"])
            self._add_train_loss(loss, batch_size)
            return loss
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=batch_size)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        if self.task.is_regression:
            scale, shift = self.hparams["target_std"], self.hparams["target_mean"]
            metrics.update(output * scale + shift, y * scale + shift)
        else:
            for name, metric in metrics.items():
                if name.endswith("log_loss"):
                    metric.update(per_row)
                else:
                    metric.update(output.softmax(dim=1), y)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def _anomaly_step(
        self, output: torch.Tensor, batch: dict[str, torch.Tensor], stage: str
    ) -> torch.Tensor:
        """Reconstruction loss on normal rows (training holds only those); scores for metrics."""
        scores = anomaly.reconstruction_scores(output, batch["x_num"])
        normal = batch["y"] == 0
        loss = scores[normal].mean() if bool(normal.any()) else scores.mean()
        if stage == "train" and "teacher" in batch:
            # Training rows are all normal (the data module keeps only those).
            loss = self._distilled(loss, output, batch["teacher"])
        if stage == "train":
            self._add_train_loss(loss, len(scores))
            return loss
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=len(scores))
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(scores, batch["y"])
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(scores))
        return loss

    def _distilled(
        self, loss: torch.Tensor, output: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        distill = Distillation(self.hparams["distill_weight"], self.hparams["distill_temperature"])
        return distilled_loss(self.task, loss, output, teacher, distill)

    def _add_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        # A `self.log` per step cost about 0.3 ms on a 2-core CPU, some 7% of the default MLP's
        # step at batch 128: Lightning moves its stored result to the value's device on every
        # call (bench/train_overhead.py). Summing here as Lightning would (float32 or wider,
        # weighted by rows) and logging the mean once per epoch gives the same `train_loss`,
        # bit for bit.
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        value = loss.detach()
        if value.dtype not in (torch.float32, torch.float64):
            value = value.to(dtype)
        if self._train_loss_sum is None:
            self._train_loss_sum = torch.zeros((), dtype=dtype, device=value.device)
        self._train_loss_sum = self._train_loss_sum + value * batch_size
        self._train_rows += batch_size

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_rows = None, 0

    def on_train_epoch_end(self) -> None:
        # Manual optimisation steps no scheduler by itself; the cosine decay is per epoch.
        scheduler = self.lr_schedulers()
        if scheduler is not None and not isinstance(scheduler, list):
            scheduler.step()  # type: ignore[call-arg]
        # Monitoring callbacks (EarlyStopping, checkpoints) run their on_train_epoch_end after
        # this hook, so they still see this epoch's train_loss; other callbacks run theirs before.
        if self._train_loss_sum is not None:
            mean = self._train_loss_sum / self._train_rows
            self.log("train_loss", mean, on_step=False, on_epoch=True, batch_size=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One optimiser step per batch of the group (a single batch dict counts as a group)."""
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list), "TabularModule has one optimiser"
        loss = torch.zeros(())
        for part in batch if isinstance(batch, list) else [batch]:
            loss = self._step(part, "train")
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        # foreach (not CPU's default): the same arithmetic, weights identical, without a Python
        # loop per tensor; a compact network's fit is about 10% faster (bench/drift_retrain.py).
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], foreach=True
        )
        # Cosine decay over the planned epochs; early stopping may end sooner, which is fine.
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.hparams["max_epochs"])
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


# The precisions `fit` trains at: float32, or bfloat16 autocast with float32 weights (a GPU's).
FitPrecision = Literal["32", "bf16-mixed"]


@dataclass
class FitSettings:
    """How `fit` trains: optimiser, epochs, early stopping, seed and device."""

    max_epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    monitor: str = "val_loss"
    seed: int = 0
    accelerator: str = "auto"
    precision: FitPrecision = "32"
    progress_bar: bool = False
    # A run still improving at max_epochs trains on up to this many epochs (None: it stops
    # there); see `TrainWhileImproving`.
    epoch_limit: int | None = None
    # With a teacher's outputs handed to `fit`: how much the student follows them.
    distill: Distillation | None = None


# How a fit ended: early stopping saw no improvement for `patience` epochs (it converged), the
# epoch cap (or limit) cut it off while it still improved, or another callback stopped it.
STOPPED_BY = ("early_stopping", "epoch_limit", "callback")


@dataclass
class FitResult:
    """A trained network and what its training did.

    `epochs` counts the epochs run (early stopping may end before `max_epochs`);
    `best_epoch` is the 0-based epoch whose weights the network holds.
    """

    network: nn.Module
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    epochs: int
    best_epoch: int
    seconds: float
    stopped_by: str = "early_stopping"

    @property
    def converged(self) -> bool:
        return self.stopped_by == "early_stopping"


def quiet_lightning() -> None:
    """Silence Lightning's per-Trainer banners (GPU/TPU lines, tips): a search builds hundreds."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")


def make_trainer(config: FitSettings, callbacks: list[Callback]) -> pl.Trainer:
    quiet_lightning()
    return pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=1,
        precision=config.precision,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=config.progress_bar,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def fit(
    network: nn.Module,
    data: TabularDataModule,
    config: FitSettings,
    *,
    extra_callbacks: list[Callback] | None = None,
    evaluate_test: bool = True,
    teacher: torch.Tensor | None = None,
) -> FitResult:
    """Train `network` (in place) with early stopping; return it with its metrics.

    The returned network holds the best validation epoch's weights and is on the CPU in eval mode,
    ready to measure, export or log.

    Args:
        teacher: a teacher network's raw outputs for every training row, in the order of
            `data.tensors["train"]`; the student then learns from them as `config.distill` says.
    """
    if teacher is not None:
        data = data.with_teacher(teacher)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    # Lightning leaves modules in the mode it finds them; a pruned network arrives in eval mode
    # and would fine-tune with frozen BatchNorm statistics and no dropout.
    network.train()
    module = TabularModule.for_data(network, data, config)
    mode = "max" if HIGHER_IS_BETTER.get(config.monitor.removeprefix("val_"), False) else "min"
    keep_best = KeepBestWeights(config.monitor, mode)
    early = EarlyStopping(monitor=config.monitor, mode=mode, patience=config.patience)
    callbacks: list[Callback] = [early, keep_best, *(extra_callbacks or [])]
    if config.epoch_limit is not None and config.epoch_limit > config.max_epochs:
        callbacks.append(
            TrainWhileImproving(
                config.monitor,
                mode,
                patience=config.patience,
                limit=config.epoch_limit,
                extension=max(config.patience, math.ceil(config.max_epochs / 2)),
            )
        )
    trainer = make_trainer(config, callbacks)
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - started
    # A second, bar-less trainer for the final evaluations: their one-batch bars are noise.
    evaluator = make_trainer(dataclasses.replace(config, progress_bar=False), [])
    val_metrics = evaluate(module, evaluator, data, "val")
    test_metrics = evaluate(module, evaluator, data, "test") if evaluate_test else {}
    network = module.network.cpu().eval()
    return FitResult(
        network=network,
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        epochs=trainer.current_epoch,
        best_epoch=keep_best.best_epoch,
        seconds=seconds,
        stopped_by=_stopped_by(trainer, early),
    )


def _stopped_by(trainer: pl.Trainer, early: EarlyStopping) -> str:
    if early.stopped_epoch > 0:
        return "early_stopping"
    if trainer.current_epoch >= (trainer.fit_loop.max_epochs or 0):
        return "epoch_limit"
    return "callback"


def evaluate(
    module: TabularModule, trainer: pl.Trainer, data: TabularDataModule, stage: str
) -> dict[str, float]:
    """The task's metrics of the module's current weights on one split, names without prefix."""
    if data.task.is_anomaly:
        return anomaly.split_metrics_of(module.network, data, stage)
    # Through `datamodule`, so that the loaders are built for this trainer's device (a data
    # module still attached to an earlier trainer would put the rows on that one's).
    if stage == "val":
        (results,) = trainer.validate(module, datamodule=data, verbose=False)
    else:
        (results,) = trainer.test(module, datamodule=data, verbose=False)
    names = metric_names(data.task)
    return {
        k.removeprefix(f"{stage}_"): float(v)
        for k, v in results.items()
        if k.removeprefix(f"{stage}_") in names
    }
