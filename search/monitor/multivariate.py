"""Multivariate drift: can a classifier tell the new rows from the model's training rows?

Per-column tests (`search.monitor.drift`) miss a change in how columns vary together: rotate two
correlated columns and every marginal stays the same. A classifier two-sample test (C2ST, as
alibi-detect's ClassifierDrift) sees it. A small gradient-boosted model learns to separate a
sample of the training rows stored with the model (`reference_rows.parquet`) from an equal
sample of the new rows; its out-of-fold AUC is 0.5 when the two are alike and grows with how
separable they are, whatever the columns do jointly.

Two things keep it useful at large samples, where detectors that test "any difference at all"
flag everything (Evidently #50, alibi-detect #646):
- the new rows are subsampled to the reference count (at most `MAX_ROWS` a side), so 1M rows
  cost what 2,000 do, and the interval does not shrink to nothing;
- the rows count as drifted only when the 95% interval's lower end clears an effect size
  (`AUC_THRESHOLD`, 0.55), not 0.5.

sklearn loads inside the functions: `tabslim --help` must not pay for it (tests/test_startup.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from search.serving import REFERENCE_ROWS_FILE

__all__ = [
    "AUC_THRESHOLD",
    "MAX_ROWS",
    "NO_REFERENCE_ROWS",
    "Multivariate",
    "classifier_two_sample",
    "multivariate_drift",
]

# An AUC the lower end of the interval must clear: a classifier that is right 55% of the time
# on a balanced pair has found a shift worth a look; below that, a large sample only proves
# that two samples are never exactly alike.
AUC_THRESHOLD = 0.55
# Rows a side at most. The stored reference holds 2,000 by default (`tracking.reference_rows`);
# a larger one is capped too, so that the cost and the interval's width stay bounded.
MAX_ROWS = 5000
# Below this many rows a side, five folds hold too few rows to fit or score anything.
MIN_ROWS = 10
TOP_COLUMNS = 5
_FOLDS = 5
_MEANINGFUL_DROP = 0.01
# Native categorical support takes codes below max_bins (255); rarer categories share the last.
_CATEGORY_CODES = 255
_Z95 = float(stats.norm.ppf(0.975))
# The report's line when `multivariate_drift` finds nothing to compare with.
NO_REFERENCE_ROWS = (
    "multivariate: the model stores no reference rows (logged with tracking.reference_rows: 0, "
    "or before tabslim stored them), so the classifier two-sample test did not run"
)
METHOD = (
    "classifier two-sample test: gradient boosting, 5-fold cross-fitted, out-of-fold AUC "
    "with a DeLong 95% interval; column importance is the AUC lost when the column is "
    "shuffled in the held-out folds"
)


@dataclass(frozen=True)
class Multivariate:
    """The classifier two-sample test of new rows against a model's stored training rows.

    `auc` is the out-of-fold AUC of telling new rows (positive) from reference rows, in
    [`low`, `high`] at 95% (DeLong); `drifted` when `low` is above `threshold`. `top_columns`
    holds (column, AUC lost when it is shuffled), largest first.
    """

    auc: float
    low: float
    high: float
    threshold: float
    drifted: bool
    reference_rows: int
    new_rows: int
    top_columns: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        found = dataclasses.asdict(self)
        found["top_columns"] = [{"column": c, "auc_drop": d} for c, d in self.top_columns]
        return found | {"method": METHOD}

    def describe(self) -> str:
        """One line for the report: the AUC, the verdict and the columns behind it."""
        head = (
            f"multivariate (classifier two-sample, {self.reference_rows:,} + "
            f"{self.new_rows:,} rows): "
        )
        if not math.isfinite(self.auc):
            return head + f"too few rows to tell (fewer than {MIN_ROWS} a side)"
        interval = f"AUC {self.auc:.2f} [{self.low:.2f}, {self.high:.2f}]"
        if not self.drifted:
            return head + f"{interval}, lower end not above {self.threshold:g}: not drifted"
        # Only columns whose shuffling costs a point of AUC: a smaller drop is the noise of
        # one shuffle, not a column that separates the rows.
        movers = [c for c, drop in self.top_columns if drop >= _MEANINGFUL_DROP]
        tail = f"; separated most by {', '.join(movers)}" if movers else ""
        return head + f"{interval} > {self.threshold:g}: drifted{tail}"


def _kinds(columns: Mapping[str, Any] | Sequence[str], reference: pd.DataFrame) -> dict[str, bool]:
    """Column -> is it categorical, from the profile's types or else the reference's dtypes."""
    if isinstance(columns, Mapping):
        return {c: spec["type"] != "numeric" for c, spec in columns.items()}
    return {
        c: not (
            pd.api.types.is_numeric_dtype(reference[c])
            and not pd.api.types.is_bool_dtype(reference[c])
        )
        for c in columns
    }


def _encode(rows: pd.DataFrame, kinds: dict[str, bool]) -> np.ndarray:
    """(rows, columns) floats: numbers as they are, categories as codes, missing as NaN.

    Codes follow the frequency in both samples together: the map is the same for both, and
    the most common categories get their own codes when there are more than fit.
    """
    encoded = np.empty((len(rows), len(kinds)), dtype=float)
    for j, (name, categorical) in enumerate(kinds.items()):
        if not categorical:
            encoded[:, j] = pd.to_numeric(rows[name], errors="coerce").to_numpy(float)
            continue
        labels = rows[name].astype("string")
        kept = labels.value_counts().index[: _CATEGORY_CODES - 1]
        codes = pd.Categorical(labels, categories=kept).codes.astype(float)
        codes[codes < 0] = _CATEGORY_CODES - 1  # a category beyond the kept ones
        codes[labels.isna().to_numpy()] = np.nan
        encoded[:, j] = codes
    return encoded


def _delong(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong standard error, from midranks (Sun and Xu's fast algorithm)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    m, n = len(positive), len(negative)
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    within_positive, within_negative = stats.rankdata(positive), stats.rankdata(negative)
    auc = (ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    # Each row's share of the pairs it wins: the structural components whose variances
    # make the AUC's.
    v_positive = (ranks[:m] - within_positive) / n
    v_negative = 1.0 - (ranks[m:] - within_negative) / m
    variance = v_positive.var(ddof=1) / m + v_negative.var(ddof=1) / n
    return float(auc), math.sqrt(max(float(variance), 0.0))


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = stats.rankdata(scores)
    m = int(labels.sum())
    n = len(labels) - m
    return float((ranks[labels == 1].sum() - m * (m + 1) / 2) / (m * n))


def classifier_two_sample(
    reference: pd.DataFrame,
    new: pd.DataFrame,
    columns: Mapping[str, Any] | Sequence[str],
    *,
    max_rows: int = MAX_ROWS,
    threshold: float = AUC_THRESHOLD,
    seed: int = 0,
) -> Multivariate:
    """Can a classifier tell `new` rows from `reference` rows on `columns`?

    Args:
        columns: the features, as the profile's `columns` (name -> {"type": ...}) or a list
            of names (types read from `reference`'s dtypes). Never pass the target.
        max_rows: rows a side at most; both sides are subsampled (seeded) to the smaller of
            this and the two row counts, so the classes are balanced.
    """
    if not 0.5 <= threshold < 1 or max_rows < MIN_ROWS:
        raise ValueError(
            f"threshold must be in [0.5, 1) and max_rows at least {MIN_ROWS}, but got "
            f"{threshold=} and {max_rows=}."
        )
    kinds = _kinds(columns, reference)
    if not kinds:
        raise ValueError("classifier_two_sample needs at least one column.")
    rng = np.random.default_rng(seed)
    size = min(len(reference), len(new), max_rows)
    if size < MIN_ROWS:
        return Multivariate(math.nan, 0.0, 1.0, threshold, False, size, size)
    # Only `size` rows of each side are ever copied or encoded: 1M new rows cost a permutation.
    picked = [
        frame.iloc[np.sort(rng.permutation(len(frame))[:size])][list(kinds)]
        for frame in (reference, new)
    ]
    x = _encode(pd.concat(picked, ignore_index=True), kinds)
    y = np.repeat([0, 1], size)
    scores, shuffled = _cross_fit(x, y, list(kinds.values()), rng, seed)
    auc, error = _delong(scores, y)
    low, high = max(0.0, auc - _Z95 * error), min(1.0, auc + _Z95 * error)
    drops = [(name, auc - _auc(s, y)) for name, s in zip(kinds, shuffled, strict=True)]
    drops.sort(key=lambda pair: -pair[1])
    return Multivariate(auc, low, high, threshold, low > threshold, size, size, drops[:TOP_COLUMNS])


def _cross_fit(
    x: np.ndarray, y: np.ndarray, categorical: list[bool], rng: np.random.Generator, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold scores, and per column the out-of-fold scores with that column shuffled.

    Each fold's model scores only rows it never saw, so an AUC above 0.5 is not memorised.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    rows, width = x.shape
    scores = np.empty(rows)
    shuffled = np.empty((width, rows))
    folds = StratifiedKFold(n_splits=_FOLDS, shuffle=True, random_state=seed)
    # One OpenMP thread: these fits are small enough that a second thread saves little, and
    # the booster's many short parallel regions wait at barriers when other processes hold
    # the cores. On a busy 2-core machine here one 4,000-row run took 307 s with two threads
    # (1 s with one thread soon after; not reproduced on a quiet machine, 0.8 s either way).
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, held in folds.split(x, y):
            # Modest on purpose: enough to find a joint shift in a few thousand rows, cheap
            # enough that five fits take a second or two; no early stopping, so no inner split.
            model = HistGradientBoostingClassifier(
                max_iter=100,
                learning_rate=0.1,
                max_leaf_nodes=15,
                early_stopping=False,
                categorical_features=np.array(categorical),
                random_state=seed,
            )
            model.fit(x[train], y[train])
            scores[held] = model.predict_proba(x[held])[:, 1]
            # (width * held, width): block j is the held-out rows with column j permuted,
            # so one call scores every shuffle.
            stacked = np.tile(x[held], (width, 1))
            for j in range(width):
                stacked[j * len(held) : (j + 1) * len(held), j] = rng.permutation(x[held, j])
            shuffled[:, held] = model.predict_proba(stacked)[:, 1].reshape(width, len(held))
    return scores, list(shuffled)


def multivariate_drift(
    network_dir: Path,
    profile: dict[str, Any],
    frame: pd.DataFrame,
    *,
    seed: int = 0,
    max_rows: int = MAX_ROWS,
) -> Multivariate | None:
    """The classifier two-sample test of `frame` against the rows stored with a model.

    Only the profile's feature columns take part, never the target. None when the model was
    logged without reference rows (`tracking.reference_rows: 0`, or before tabslim stored them).
    """
    path = network_dir / REFERENCE_ROWS_FILE
    if not path.is_file():
        return None
    reference = pd.read_parquet(path)
    if reference.empty:
        return None
    columns = {c: spec for c, spec in profile["columns"].items() if c in reference.columns}
    return classifier_two_sample(reference, frame, columns, max_rows=max_rows, seed=seed)
