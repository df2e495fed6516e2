"""The anomaly task, in the fraud-detection style: a rare positive class found by reconstruction.

The network (an autoencoder: `accordion`, or any kind whose output has the numeric inputs'
width) learns to reconstruct the numeric features of normal training rows only. A row's score is
its mean squared reconstruction error; the decision threshold is the one with the best F1 on the
validation split, and the test split is judged at that threshold. Metrics: PR AUC (primary),
ROC AUC, recall at a fixed false-positive rate, F1 at the chosen threshold (a row is flagged
when its score is at or above it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from lightning_modules.errors import TabslimInputError, shown

if TYPE_CHECKING:
    from torch import nn


class SplitTensors(Protocol):
    """What the scoring below reads of a data module (`lightning_modules.data`, which imports
    this module, so the type is named by its shape rather than imported)."""

    tensors: dict[str, dict[str, torch.Tensor]]
    anomaly_fpr: float


METRICS = ("pr_auc", "roc_auc", "recall_at_fpr", "f1", "threshold")
# A positive class above this share of the rows is not an anomaly: classify it instead.
MAX_POSITIVE_SHARE = 0.2
DEFAULT_FPR = 0.01


def positive_class(y: pd.Series, target: str, source: str) -> Any:
    """The rare label of a two-valued target column, or a one-line error naming the problem."""
    counts = y.dropna().value_counts()
    if len(counts) != 2:
        raise TabslimInputError(
            f"task anomaly needs a target column '{target}' in {source} with two values (normal "
            f"and the rare positive), but it has {len(counts)}: "
            f"{sorted(map(str, counts.index))[:5]}"
        )
    positive = counts.idxmin()
    share = counts.min() / counts.sum()
    if share > MAX_POSITIVE_SHARE:
        raise TabslimInputError(
            f"task anomaly needs a rare positive class, but {shown(positive)} is {share:.1%} of "
            f"'{target}' in {source} (at most {MAX_POSITIVE_SHARE:.0%}); use --task binary"
        )
    return positive


def check_splits(train: np.ndarray, val: np.ndarray, target: str) -> None:
    """Positives in the training and validation splits (0/1 labels), or a one-line error."""
    for name, labels in (("training", train), ("validation", val)):
        if labels.sum() == 0:
            raise TabslimInputError(
                f"task anomaly found no positive '{target}' rows in the {name} split "
                f"({len(labels)} rows); use more rows or larger validation/test fractions"
            )


def reconstruction_scores(output: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
    """(rows,) mean squared error between the reconstruction and the numeric inputs."""
    return ((output.float() - x_num.float()) ** 2).mean(dim=1)


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold with the best F1; a row is flagged when its score is >= it."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The curve's last point (precision 1, recall 0) has no threshold.
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, fpr: float = DEFAULT_FPR
) -> dict[str, float]:
    """The task's metrics of `scores` against 0/1 `labels` at a threshold chosen elsewhere."""
    if labels.min() == labels.max():
        nan = float("nan")
        return {
            "pr_auc": nan,
            "roc_auc": nan,
            "recall_at_fpr": nan,
            "f1": nan,
            "threshold": threshold,
        }
    false_rate, true_rate, _ = roc_curve(labels, scores)
    flagged = scores >= threshold
    tp = float(np.sum(flagged & (labels == 1)))
    f1 = 2 * tp / max(float(np.sum(flagged)) + float(np.sum(labels == 1)), 1.0)
    return {
        "pr_auc": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "recall_at_fpr": float(true_rate[false_rate <= fpr].max()),
        "f1": f1,
        "threshold": threshold,
    }


def split_metrics(
    val: tuple[np.ndarray, np.ndarray], split: tuple[np.ndarray, np.ndarray], fpr: float
) -> dict[str, float]:
    """Metrics on `split` (scores, labels) at the threshold chosen on `val` only."""
    threshold = choose_threshold(*val)
    return metrics(*split, threshold, fpr)


def constant_pr_auc(labels: Sequence[int] | np.ndarray) -> float:
    """The PR AUC of a constant score: the share of positives."""
    return float(np.mean(labels))


def network_scores(network: nn.Module, data: SplitTensors, split: str) -> np.ndarray:
    """(rows,) reconstruction errors of `split`'s rows, in eval mode."""
    tensors = data.tensors[split]
    flags = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        with torch.inference_mode():
            device = next(network.parameters()).device
            output = network(tensors["x_num"].to(device), tensors["x_cat"].to(device)).cpu()
    finally:
        for m, training in flags:
            m.training = training
    return reconstruction_scores(output, tensors["x_num"]).numpy()


def split_metrics_of(network: nn.Module, data: SplitTensors, split: str) -> dict[str, float]:
    """Metrics of `split` at the threshold chosen on the validation split."""
    labels = {s: data.tensors[s]["y"].numpy() for s in ("val", split)}
    val = (network_scores(network, data, "val"), labels["val"])
    scores = val[0] if split == "val" else network_scores(network, data, split)
    return split_metrics(val, (scores, labels[split]), data.anomaly_fpr)
