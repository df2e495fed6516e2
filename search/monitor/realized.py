"""How the deployed model did on new rows that carry their labels: the metric it was validated
on, realized on those rows, with a seeded 95% bootstrap interval.

`tabslim drift` reports it; `tabslim retrain` retrains when it falls below validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score

from lightning_modules.metrics import metric_of_rows, row_scores
from lightning_modules.task import Task
from search.monitor.drift import Realized
from search.serving import OnnxPredictor

__all__ = ["realized_metric", "served_frame", "served_predictions"]


def served_frame(network_dir: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The served model's whole answer for each row (`prediction`, `proba_<class>`,
    `anomaly_score`): the realized and the estimated metric both read it, from one ONNX run."""
    return OnnxPredictor(network_dir).predict(frame)


def served_predictions(served: pd.DataFrame, profile: dict) -> pd.Series:
    """Of the served answers (`served_frame`), each row's prediction, or (task anomaly) its
    score, which is what drifts and what the PR AUC is realized on."""
    # The profile is JSON as stored, so its task is the stored name.
    return pd.Series(served[Task(profile["task"]).scored_output].to_numpy())


def realized_metric(profile: dict, frame: pd.DataFrame, predictions: pd.Series) -> Realized | None:
    """The metric on labelled new rows with a 95% bootstrap interval (seeded)."""
    target = profile["target"]
    if target not in frame.columns:
        return None
    labelled = frame[target].notna().to_numpy()
    if labelled.sum() < 2:
        return None
    actual, predicted = frame[target][labelled], predictions[labelled]
    validation = profile["validation"]
    task = Task(profile["task"])
    rows = row_scores(task, predicted, actual, profile.get("positive_class"))
    if task.is_anomaly:
        return _realized_pr_auc(profile, rows)
    value = float(metric_of_rows(task.metric, rows))

    def statistic(sample: np.ndarray) -> float:
        return float(metric_of_rows(task.metric, sample))

    interval = stats.bootstrap(
        (rows,),
        statistic,
        n_resamples=2000,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    return Realized(
        validation["metric"],
        value,
        float(interval.low),
        float(interval.high),
        float(validation["value"]),
    )


def _realized_pr_auc(profile: dict, pairs: np.ndarray) -> Realized | None:
    values, labels = pairs[:, 0], pairs[:, 1].astype(int)
    if labels.min() == labels.max():
        return None  # no positive (or no normal) labelled row: PR AUC is undefined
    value = float(metric_of_rows("pr_auc", pairs))
    interval = stats.bootstrap(
        (labels, values),
        lambda y, s: average_precision_score(y, s) if y.min() < y.max() else 0.0,
        paired=True,
        n_resamples=1000,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    validation = profile["validation"]
    return Realized(
        validation["metric"],
        value,
        float(interval.low),
        float(interval.high),
        float(validation["value"]),
    )
