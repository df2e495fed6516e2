from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import MLPSpec, build
from lightning_modules.training import FitSettings, fit, metric_names


def _fit(data: TabularDataModule, epochs: int = 3, seed: int = 0, hidden=(16, 8)):  # type: ignore[no-untyped-def]
    spec = MLPSpec(hidden=hidden, **data.network_inputs())
    return fit(build(spec, seed=seed), data, FitSettings(max_epochs=epochs, seed=seed, lr=5e-3))


def test_classifier_learns_and_reports_the_task_metrics(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", batch_size=32)
    result = _fit(data, epochs=8)
    assert set(result.val_metrics) == set(metric_names("binary"))
    assert set(result.test_metrics) == set(metric_names("binary"))
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
    assert set(result.val_metrics) == set(metric_names(task))
    assert all(math.isfinite(v) for v in result.val_metrics.values())
    # Two epochs are few, but the validation loss falls below the untrained network's.
    assert result.val_metrics[loss] < untrained[loss]
