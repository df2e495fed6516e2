"""The metrics a fit reports per task, as torchmetrics collections, and their names.

The LightningModule (`lightning_modules.training`) updates them per batch and logs them per
epoch; `lightning_modules.evaluation` computes the same ones from outputs made elsewhere.
"""

from __future__ import annotations

import warnings

import torchmetrics

from lightning_modules import anomaly
from lightning_modules.task import Task

__all__ = ["metric_names", "task_metrics"]

# A class missing from a validation split (a rare class, a short retraining window) makes the
# macro AUROC warn at every epoch; its score for that class is 0, as the warning says.
warnings.filterwarnings("ignore", message="No positive samples in targets", category=UserWarning)


def metric_names(task: Task) -> list[str]:
    if task.is_anomaly:
        return list(anomaly.METRICS)
    if task.is_regression:
        return ["rmse", "mae", "r2"]
    return ["accuracy", "balanced_accuracy", "roc_auc", "log_loss"]


def task_metrics(task: Task, n_classes: int) -> torchmetrics.MetricCollection:
    if task.is_anomaly:
        # Per epoch, for the logs; the reported metrics (a threshold chosen on validation
        # included) come from `evaluate`, which sees the whole split at once.
        return torchmetrics.MetricCollection(
            {
                "pr_auc": torchmetrics.AveragePrecision(task="binary"),
                "roc_auc": torchmetrics.AUROC(task="binary"),
            }
        )
    if task.is_regression:
        return torchmetrics.MetricCollection(
            {
                "rmse": torchmetrics.MeanSquaredError(squared=False),
                "mae": torchmetrics.MeanAbsoluteError(),
                "r2": torchmetrics.R2Score(),
            }
        )
    # Binary is trained as two classes with softmax, so one metric family serves both.
    return torchmetrics.MetricCollection(
        {
            "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=n_classes),
            "balanced_accuracy": torchmetrics.Recall(
                task="multiclass", num_classes=n_classes, average="macro"
            ),
            "roc_auc": torchmetrics.AUROC(task="multiclass", num_classes=n_classes),
            "log_loss": torchmetrics.MeanMetric(),
        }
    )
