from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.callbacks import TrainWhileImproving
from lightning_modules.data import TRAIN_BATCHES_PER_STEP, InMemoryBatches, TabularDataModule
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import MLPSpec, build
from lightning_modules.task import Task
from lightning_modules.task_metrics import metric_names
from lightning_modules.training import FitSettings, fit, make_trainer
from search.config import validate
from search.inputs import fit_settings


def _fit(data: TabularDataModule, epochs: int = 3, seed: int = 0, hidden=(16, 8)):  # type: ignore[no-untyped-def]
    spec = MLPSpec(hidden=hidden, **data.network_inputs())
    return fit(build(spec, seed=seed), data, FitSettings(max_epochs=epochs, seed=seed, lr=5e-3))


def test_classifier_learns_and_reports_the_task_metrics(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", batch_size=32)
    result = _fit(data, epochs=8)
    assert set(result.val_metrics) == set(metric_names(Task.BINARY))
    assert set(result.test_metrics) == set(metric_names(Task.BINARY))
    assert result.val_metrics["accuracy"] > 0.8
    assert result.val_metrics["roc_auc"] > 0.85
    assert 0 < result.val_metrics["log_loss"] < 0.69  # better than a coin
    assert not result.network.training


def test_regression_metrics_are_on_the_original_scale(small_table: pd.DataFrame) -> None:
    frame = small_table.drop(columns=["label"]).assign(
        amount=lambda f: 1000 + 300 * f["f1"].fillna(0) + 10 * f["f2"]
    )
    data = TabularDataModule.from_frame(frame, "amount", batch_size=32)
    result = _fit(data, epochs=10)
    assert set(result.val_metrics) == {"rmse", "mae", "r2"}
    spread = data.val_frame["amount"].std()
    # On the original scale RMSE is in the target's units, well below its spread once trained.
    assert 1.0 < result.val_metrics["rmse"] < spread
    assert result.val_metrics["r2"] > 0.5


def test_training_is_deterministic_on_cpu(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", batch_size=32)
    a, b = _fit(data, seed=1), _fit(data, seed=1)
    for (name, wa), wb in zip(
        a.network.state_dict().items(), b.network.state_dict().values(), strict=True
    ):
        assert torch.equal(wa, wb), name
    c = _fit(data, seed=2)
    assert not torch.equal(a.network.head.weight, c.network.head.weight)


def test_early_stopping_keeps_the_best_epoch(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", batch_size=32)
    spec = MLPSpec(hidden=(64, 64), dropout=0.0, **data.network_inputs())
    # A high learning rate and no decay overfit fast, so validation loss turns upwards.
    result = fit(build(spec), data, FitSettings(max_epochs=60, lr=0.05, patience=3))
    assert result.epochs < 60
    assert 0 <= result.best_epoch < result.epochs
    # The final evaluation is of the restored best weights, not of the last epoch's.
    assert result.epochs - result.best_epoch >= 3


@pytest.mark.parametrize(
    ("name", "task", "loss"),
    [
        ("synthetic_classification", "multiclass", "log_loss"),
        ("synthetic_regression", "regression", "rmse"),
    ],
)
def test_categorical_tables_train_end_to_end(name: str, task: str, loss: str) -> None:
    data = TabularDataModule.from_bundled(name, batch_size=256)
    assert data.task == task
    assert len(data.preprocessor.cat_cardinalities) == 3  # color, size and city are embedded
    spec = MLPSpec(hidden=(16, 8), **data.network_inputs())
    untrained = evaluate_network(build(spec, seed=0), data)  # where `_fit` starts from
    result = _fit(data, epochs=2)
    assert set(result.val_metrics) == set(metric_names(Task(task)))
    assert all(math.isfinite(v) for v in result.val_metrics.values())
    # Two epochs are few, but the validation loss falls below the untrained network's.
    assert result.val_metrics[loss] < untrained[loss]


class _Scripted(pl.LightningModule):
    """Logs `val_loss` from a script, one value per epoch: a learning curve the test controls."""

    def __init__(self, losses: list[float], max_epochs: int) -> None:
        super().__init__()
        self.losses, self.max_epochs = losses, max_epochs
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum() * 0.0

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self.losses[min(self.current_epoch, len(self.losses) - 1)])

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4)


def _run_script(losses: list[float], cap: int = 6, limit: int = 18) -> tuple[int, Any, Any]:
    """Epochs run under early stopping (patience 2) and `TrainWhileImproving`."""
    module = _Scripted(losses, cap)
    extend = TrainWhileImproving("val_loss", "min", patience=2, limit=limit, extension=4)
    early = EarlyStopping(monitor="val_loss", mode="min", patience=2)
    trainer = pl.Trainer(
        max_epochs=cap, callbacks=[early, extend], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module)
    return trainer.current_epoch, extend, trainer


def test_a_run_still_improving_at_the_cap_trains_on_until_it_converges() -> None:
    # Improving through the cap of 6 epochs up to epoch 9 (1.5), then flat.
    losses = [10.0 - i for i in range(9)] + [1.5] * 20
    epochs, extend, trainer = _run_script(losses)
    assert extend.extensions == 2  # after epochs 6 and 10, each the last planned, improving
    assert epochs == 12  # best at epoch 9, then two epochs without improvement end it
    # Each extension restarts the cosine at half the rate it started from.
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(0.1 * 0.25)


def test_a_converged_run_stops_before_the_cap_and_a_run_improving_forever_stops_at_the_limit() -> (
    None
):
    epochs, extend, _ = _run_script([5.0, 4.0, 3.0, 4.0, 4.0, 4.0, 4.0])
    assert (epochs, extend.extensions) == (5, 0)
    epochs, extend, _ = _run_script([100.0 - i for i in range(40)], limit=12)
    assert epochs == 12 and extend.extensions == 2


def test_fit_records_whether_it_converged(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", batch_size=32)
    spec = MLPSpec(hidden=(16, 8), **data.network_inputs())
    capped = fit(build(spec), data, FitSettings(max_epochs=2, lr=5e-3))
    assert capped.stopped_by == "epoch_limit" and not capped.converged
    longer = fit(build(spec), data, FitSettings(max_epochs=2, lr=5e-3, epoch_limit=60))
    assert longer.epochs > 2
    assert longer.stopped_by in ("early_stopping", "epoch_limit")
    assert longer.converged == (longer.stopped_by == "early_stopping")


class _CpuSlicedBatches:
    """Batches as the loader sliced them before they could live on a device: CPU tensors, a
    CPU generator's randperm per epoch (when seeded), slices grouped `per_item` at a time."""

    def __init__(
        self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int | None, per_item: int
    ) -> None:
        self.tensors, self.batch_size, self.per_item = tensors, batch_size, per_item
        self.rows = len(tensors["y"])
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.rows / self.batch_size) / self.per_item)

    def __iter__(self) -> Iterator[Any]:
        order = (
            torch.arange(self.rows)
            if self.generator is None
            else torch.randperm(self.rows, generator=self.generator)
        )
        starts = list(range(0, self.rows, self.batch_size))
        batches = [
            {k: v[order[i : i + self.batch_size]] for k, v in self.tensors.items()} for i in starts
        ]
        if self.per_item == 1:
            yield from batches
            return
        for i in range(0, len(batches), self.per_item):
            yield batches[i : i + self.per_item]


def _recording(make: Any, into: list[InMemoryBatches]) -> Any:
    def record() -> InMemoryBatches:
        into.append(make())
        return into[-1]

    return record


def test_a_fit_on_device_resident_batches_has_the_weights_of_cpu_sliced_ones(
    small_table: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = TabularDataModule.from_frame(small_table, "label", batch_size=16)
    built: dict[str, list[InMemoryBatches]] = {"train": [], "val": [], "test": []}
    for stage, loaders in built.items():
        monkeypatch.setattr(
            data, f"{stage}_dataloader", _recording(getattr(data, f"{stage}_dataloader"), loaders)
        )
    resident = _fit(data, epochs=3)
    # Each loader is built, and its rows moved to the trainer's device, once per fit (the
    # validation loader once more for the final evaluation), not once per epoch.
    assert {stage: len(loaders) for stage, loaders in built.items()} == {
        "train": 1,
        "val": 2,
        "test": 1,
    }
    assert all(b.device == torch.device("cpu") for loaders in built.values() for b in loaders)

    reference = TabularDataModule.from_frame(small_table, "label", batch_size=16)
    tensors = reference.tensors
    # The training seed is read when Lightning asks for the loader, as the data module does.
    monkeypatch.setattr(
        reference,
        "train_dataloader",
        lambda: _CpuSlicedBatches(
            tensors["train"], 16, torch.initial_seed(), TRAIN_BATCHES_PER_STEP
        ),
    )
    for stage in ("val", "test"):
        loader = _CpuSlicedBatches(tensors[stage], 4096, None, 1)
        monkeypatch.setattr(reference, f"{stage}_dataloader", lambda loader=loader: loader)
    expected = _fit(reference, epochs=3)
    weights = resident.network.state_dict()
    for name, weight in expected.network.state_dict().items():
        assert torch.equal(weights[name], weight), name
    assert resident.val_metrics == expected.val_metrics
    assert resident.test_metrics == expected.test_metrics


def test_training_precision_goes_from_the_config_to_lightning(
    small_data: TabularDataModule,
) -> None:
    assert fit_settings(validate({}, "x")).precision == "32"
    # YAML reads `precision: 32` as a number.
    assert fit_settings(validate({"training": {"precision": 32}}, "x")).precision == "32"
    settings = fit_settings(validate({"training": {"precision": "bf16-mixed"}}, "x"))
    assert make_trainer(settings, []).precision == "bf16-mixed"
    assert make_trainer(FitSettings(), []).precision == "32-true"  # Lightning's default
    # CPU autocast has bfloat16 too: the fit runs, and hands back float32 weights on the CPU.
    spec = MLPSpec(hidden=(16, 8), **small_data.network_inputs())
    settings = FitSettings(max_epochs=2, lr=5e-3, accelerator="cpu", precision="bf16-mixed")
    result = fit(build(spec), small_data, settings)
    assert all(
        p.dtype == torch.float32 and p.device.type == "cpu" for p in result.network.parameters()
    )
    assert math.isfinite(result.val_metrics["log_loss"])
