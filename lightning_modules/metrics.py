"""Metrics by task, in one place: what each task is judged on, and how one row counts toward it.

Every per-row scorer (a trial's rows, the retrain holdout, realized drift, the reference
profile, paired bootstrap intervals) takes its rows from here, so that a row means the same
thing everywhere:
- binary and multiclass: 1.0 for a right class and 0.0 for a wrong one (accuracy is their mean);
- regression: the squared error on the target's scale (RMSE is the root of their mean);
- anomaly: an (anomaly score, 0/1 label) pair per row, since PR AUC is no mean over rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from lightning_modules.task import Task

__all__ = [
    "HIGHER_IS_BETTER",
    "correct_rows",
    "labelled_pairs",
    "metric_of_rows",
    "row_scores",
]


# Whether larger is better, per metric (a task's own metric says it as `Task.higher_is_better`).
HIGHER_IS_BETTER = {
    "pr_auc": True,
    "recall_at_fpr": True,
    "f1": True,
    "accuracy": True,
    "balanced_accuracy": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}


def correct_rows(predicted: Any, actual: Any) -> np.ndarray:
    """1.0 where the predicted class is the actual one. Labels compare as strings, as profiles
    and served predictions store them, so 3 and "3" are the same class."""
    predicted = pd.Series(np.asarray(predicted)).astype("string").to_numpy()
    actual = pd.Series(np.asarray(actual)).astype("string").to_numpy()
    return (predicted == actual).astype(float)


def labelled_pairs(scores: Any, actual: Any, positive: Any) -> np.ndarray:
    """(score, 1.0 for the positive class else 0.0) per row, shape (rows, 2)."""
    labels = pd.Series(np.asarray(actual)).astype("string").to_numpy() == str(positive)
    return np.stack([np.asarray(scores, dtype=float), labels.astype(float)], axis=1)


def row_scores(task: Task, predicted: Any, actual: Any, positive: Any = None) -> np.ndarray:
    """Per row, what `task`'s metric is made of, from decoded predictions (for task anomaly,
    the anomaly scores) and the actual target values."""
    task = Task(task)  # a stored name, as bench scripts and tests pass it, parses too
    if task.is_anomaly:
        return labelled_pairs(predicted, actual, positive)
    if task.is_regression:
        return (np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)) ** 2
    return correct_rows(predicted, actual)


def metric_of_rows(metric: str, rows: np.ndarray, axis: int = -1) -> Any:
    """The metric from its rows (`row_scores`): their mean, its root for RMSE, and for PR AUC
    the average precision of the (score, label) pairs (one value; `axis` does not apply)."""
    if metric == "pr_auc":
        return float(average_precision_score(rows[:, 1], rows[:, 0]))
    mean = np.mean(rows, axis=axis)
    return np.sqrt(mean) if metric == "rmse" else mean
