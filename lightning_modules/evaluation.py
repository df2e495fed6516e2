"""Metrics of a network as it is, without training: after pruning, before fine-tuning."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules import anomaly
from lightning_modules.data import TabularDataModule
from lightning_modules.metrics import correct_rows
from lightning_modules.networks import infer
from lightning_modules.preprocessing import Preprocessor
from lightning_modules.task_metrics import task_metrics
from lightning_modules.training import FitSettings, TabularModule, evaluate, make_trainer


def evaluate_network(
    network: nn.Module, data: TabularDataModule, split: str = "val", *, accelerator: str = "cpu"
) -> dict[str, float]:
    """The task's metrics of `network` on one split ("val" or "test"), names without prefix."""
    module = TabularModule.for_data(network, data)
    trainer = make_trainer(FitSettings(max_epochs=1, accelerator=accelerator), [])
    metrics = evaluate(module, trainer, data, split)
    network.cpu().eval()
    return metrics


def output_metrics(
    output: torch.Tensor,
    data: TabularDataModule,
    split: str,
    *,
    val_output: torch.Tensor | None = None,
) -> dict[str, float]:
    """The metrics `evaluate_network` gives, from a split's outputs computed elsewhere (e.g. by
    ONNX Runtime): `output` is (rows, d_out) for every row of `split`, in order.

    Args:
        val_output: the validation split's outputs, where task anomaly picks its threshold
            (`output` itself when `split` is "val").
    """
    y = data.tensors[split]["y"]
    if data.task.is_anomaly:
        val_output = output if split == "val" else val_output
        assert val_output is not None, "task anomaly's threshold is chosen on validation"
        val = (_scores(val_output, data, "val"), data.tensors["val"]["y"].numpy())
        return anomaly.split_metrics(
            val, (_scores(output, data, split), y.numpy()), data.anomaly_fpr
        )
    metrics = task_metrics(data.task, data.network_inputs()["d_out"])
    if data.task.is_regression:
        scale, shift = data.preprocessor.target_std, data.preprocessor.target_mean
        metrics.update(output * scale + shift, y * scale + shift)
    else:
        per_row = F.cross_entropy(output, y, reduction="none")
        for name, metric in metrics.items():
            metric.update(per_row) if name == "log_loss" else metric.update(output.softmax(1), y)
    return {name: float(value) for name, value in metrics.compute().items()}


def row_scores(network: nn.Module, data: TabularDataModule, split: str) -> np.ndarray:
    """Per row of `split`, what the task metric averages: 1.0/0.0 for a correct/wrong class,
    or the squared error on the target's original scale for regression. Shape (rows,).

    Paired comparisons resample these rows, so that two networks are judged on the same rows.
    """
    tensors = data.tensors[split]
    return output_row_scores(infer(network, tensors["x_num"], tensors["x_cat"]), data, split)


def output_row_scores(output: torch.Tensor, data: TabularDataModule, split: str) -> np.ndarray:
    """`row_scores` from a split's outputs computed elsewhere.

    Task anomaly's PR AUC is no mean over rows: its rows are (score, 0/1 label) pairs, (N, 2).
    """
    tensors = data.tensors[split]
    if data.task.is_anomaly:
        return np.stack([_scores(output, data, split), tensors["y"].numpy()], axis=1)
    if data.task.is_regression:
        # The residual in standardised units times the target's scale: the original-scale error.
        error = (output - tensors["y"]).squeeze(1).double() * data.preprocessor.target_std
        return (error**2).numpy()
    return correct_rows(output.argmax(dim=1).numpy(), tensors["y"].numpy())


def constant_prediction_metric(data: TabularDataModule, split: str = "val") -> float:
    """The task metric of the best constant guess fitted on training rows, on `split`.

    Classification: the share of `split` rows in the most frequent training class (accuracy of
    always predicting it). Regression: the RMSE of always predicting the training mean. A trained
    network that does no better has learned nothing.
    """
    y_train, y = data.tensors["train"]["y"], data.tensors[split]["y"]
    if data.task.is_anomaly:
        return anomaly.constant_pr_auc(y.numpy())  # a constant score ranks nothing
    if data.task.is_regression:
        # Targets are standardised on the training rows, so the training mean is 0 here.
        rmse = float(torch.sqrt(torch.mean(y.double() ** 2))) * data.preprocessor.target_std
        return rmse
    majority = int(torch.bincount(y_train).argmax())
    return float((y == majority).double().mean())


def no_better_than_constant(
    data: TabularDataModule, value: float, split: str = "val"
) -> str | None:
    """When `value`, the task metric on `split`, is no better than the best constant guess:
    that guess and its metric, e.g. "always predicting the most frequent class (0.1000)".
    None when the network did better."""
    constant = constant_prediction_metric(data, split)
    # Metrics come back as float32: 27/270 rows is 0.10000000149 there, and 0.1 here.
    tolerance = 1e-6 * max(1.0, abs(constant))
    if data.task.higher_is_better:
        no_better = value <= constant + tolerance
        guess = "one score for every row" if data.task.is_anomaly else "the most frequent class"
    else:
        no_better = value >= constant - tolerance
        guess = "the training mean"
    return f"always predicting {guess} ({constant:.4g})" if no_better else None


def _scores(output: torch.Tensor, data: TabularDataModule, split: str) -> np.ndarray:
    return anomaly.reconstruction_scores(output, data.tensors[split]["x_num"]).numpy()


def serving_preprocessor(network: nn.Module, data: TabularDataModule) -> Preprocessor:
    """The data's preprocessing as `network`'s logged model serves it: for task anomaly, with
    the threshold chosen on validation for this network (other tasks: unchanged)."""
    prep = data.preprocessor
    if not data.task.is_anomaly:
        return prep
    scores = anomaly.network_scores(network, data, "val")
    threshold = anomaly.choose_threshold(scores, data.tensors["val"]["y"].numpy())
    return dataclasses.replace(prep, anomaly_threshold=threshold)
