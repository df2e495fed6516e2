"""Paired uncertainty of a metric difference: candidate minus baseline on the same rows.

A difference between two networks evaluated on the same validation (or test) rows is judged by
resampling those rows together (a paired bootstrap, seeded), which removes the rows' own
difficulty from the spread. Users read "within half a point" as a promise; the interval says how
far the rows support it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lightning_modules.metrics import metric_of_rows

__all__ = ["CONFIDENCE", "PairedDelta", "paired_delta", "paired_differences"]

CONFIDENCE = 0.95
_RESAMPLES = 2000
# Rows x resamples held in memory at once by the bootstrap (float64: 8 bytes each).
_BATCH_CELLS = 20_000_000


@dataclass(frozen=True)
class PairedDelta:
    """`delta` = candidate metric - baseline metric, with a `CONFIDENCE` interval [low, high]."""

    delta: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_metrics(self, prefix: str) -> dict[str, float]:
        """E.g. `val_delta`, `val_delta_ci_low`, `val_delta_ci_high` for prefix "val"."""
        return {
            f"{prefix}_delta": self.delta,
            f"{prefix}_delta_ci_low": self.low,
            f"{prefix}_delta_ci_high": self.high,
        }


def _paired_proportions(
    candidate: np.ndarray, baseline: np.ndarray, delta: float, seed: int, confidence: float
) -> PairedDelta:
    """The same paired bootstrap for 0/1 rows, drawn as counts instead of row indices.

    A resample's accuracy difference depends only on how many rows it draws where the candidate
    alone is right (+1) and where the baseline alone is (-1), and those counts follow a
    multinomial: drawing them directly costs O(resamples), not O(resamples x rows), which
    matters for a trial on tens of thousands of validation rows.
    """
    n = len(candidate)
    gains = int(np.sum(candidate > baseline))
    losses = int(np.sum(candidate < baseline))
    shares = [gains / n, losses / n, 1.0 - (gains + losses) / n]
    counts = np.random.default_rng(seed).multinomial(n, shares, size=_RESAMPLES)
    differences = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1 - confidence) / 2
    low, high = np.quantile(differences, [alpha, 1 - alpha])
    return PairedDelta(delta, float(low), float(high))


def paired_delta(
    candidate: np.ndarray,
    baseline: np.ndarray,
    metric: str,
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> PairedDelta:
    """The metric difference on the same rows and its percentile bootstrap interval.

    Args:
        candidate, baseline: per-row scores of the same rows in the same order, as
            `lightning_modules.evaluation.row_scores` gives them.
        metric: "accuracy" (rows are 0/1), "rmse" (rows are squared errors) or "pr_auc"
            (rows are (anomaly score, 0/1 label) pairs, shape (N, 2)).
        seed: the bootstrap's seed; the same seed gives the same interval.
        confidence: the interval's level; higher where one of several is chosen on it.
    """
    candidate = np.asarray(candidate, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    if metric == "pr_auc":
        return _paired_ranking(candidate, baseline, seed, confidence)
    if candidate.shape != baseline.shape or candidate.ndim != 1 or len(candidate) == 0:
        raise ValueError(
            f"paired rows must be two equal, non-empty vectors, but got shapes "
            f"{candidate.shape} and {baseline.shape}."
        )
    delta = float(metric_of_rows(metric, candidate) - metric_of_rows(metric, baseline))
    if len(candidate) == 1:
        # One row resamples to itself: there is no spread to estimate.
        return PairedDelta(delta, delta, delta)
    if (
        metric != "rmse"
        and np.isin(candidate, (0.0, 1.0)).all()
        and np.isin(baseline, (0.0, 1.0)).all()
    ):
        return _paired_proportions(candidate, baseline, delta, seed, confidence)

    def statistic(c: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return metric_of_rows(metric, c, axis) - metric_of_rows(metric, b, axis)

    result = stats.bootstrap(
        (candidate, baseline),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=_RESAMPLES,
        batch=max(1, _BATCH_CELLS // len(candidate)),
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return PairedDelta(delta, delta, delta)
    return PairedDelta(delta, low, high)


def _average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision of each row of `weights` (resamples x rows: how often a row is drawn).

    Rows are ranked by score once; a resample only changes their weights, so precision at each
    rank is a ratio of weighted cumulative sums. Equal to scikit-learn's for distinct scores.
    """
    order = np.argsort(-scores, kind="stable")
    positive = labels[order] == 1
    w = weights[:, order]
    true_positives = np.cumsum(w * positive, axis=1)
    flagged = np.cumsum(w, axis=1)
    precision = true_positives / np.maximum(flagged, 1e-12)
    positives = true_positives[:, -1]
    return (precision * (w * positive)).sum(axis=1) / np.maximum(positives, 1e-12)


def paired_differences(candidate: np.ndarray, baseline: np.ndarray, seed: int) -> np.ndarray:
    """The paired bootstrap of a PR AUC difference: both networks' (score, label) rows are
    resampled together, and each resample's average precision recomputed; one difference per
    resample."""
    if candidate.shape != baseline.shape or candidate.ndim != 2 or candidate.shape[1] != 2:
        raise ValueError(
            f"pr_auc rows must be two equal (N, 2) arrays of (score, label), but got shapes "
            f"{candidate.shape} and {baseline.shape}."
        )
    labels = candidate[:, 1]
    if not np.array_equal(labels, baseline[:, 1]):
        raise ValueError("paired pr_auc rows must hold the same labels in the same order.")
    n = len(labels)
    rng = np.random.default_rng(seed)
    differences = []
    per_batch = max(1, _BATCH_CELLS // (4 * n))
    for start in range(0, _RESAMPLES, per_batch):
        size = min(per_batch, _RESAMPLES - start)
        drawn = rng.integers(0, n, size=(size, n))
        flat = (np.arange(size)[:, None] * n + drawn).ravel()
        weights = np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
        differences.append(
            _average_precision(candidate[:, 0], labels, weights)
            - _average_precision(baseline[:, 0], labels, weights)
        )
    return np.concatenate(differences)


def _paired_ranking(
    candidate: np.ndarray, baseline: np.ndarray, seed: int, confidence: float = CONFIDENCE
) -> PairedDelta:
    differences = paired_differences(candidate, baseline, seed)
    labels = candidate[:, 1]
    one = np.ones((1, len(labels)))
    delta = float(
        _average_precision(candidate[:, 0], labels, one)[0]
        - _average_precision(baseline[:, 0], labels, one)[0]
    )
    alpha = (1 - confidence) / 2
    low, high = np.quantile(differences, [alpha, 1 - alpha])
    return PairedDelta(delta, float(low), float(high))
