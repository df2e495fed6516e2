"""Which rows do which job: the table dealt into training, validation, certification and test
rows, at random (stratified where it can be) or in time.

Each split has one job (`SPLIT_JOBS`). Certification rows are read once, after every decision
that selects a model: a split that selects and also certifies passes the lucky candidate (the
winner's curse).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task

__all__ = ["MIN_ROWS_PER_SPLIT", "SPLIT_JOBS", "split", "split_in_time"]

# Each split needs at least this many rows for the metrics to mean anything.
MIN_ROWS_PER_SPLIT = 5
SPLIT_JOBS = {
    "train": "fits the weights",
    "val": "early-stops and selects: the objectives, the rungs, the candidates' short list",
    "certify": "certifies the champion and calibrates the estimators and the profile",
    "test": "is reported only",
}


def split(
    frame: pd.DataFrame,
    target: str,
    task: Task,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: str,
    certify_fraction: float = 0.0,
    order: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seeded train/validation/certification/test split, stratified for classification where
    possible; in time (earliest rows train, latest test) when `order` gives each row's time.

    Each part has one job (`SPLIT_JOBS`). With `certify_fraction` 0 the certification part is
    empty, as a module built for a single fit (a fold, a retrain window) may ask.
    """
    n = len(frame)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_certify = round(n * certify_fraction)
    _check_sizes(n, n_val, n_test, n_certify, bool(certify_fraction), source)
    if order is not None:
        return split_in_time(
            frame,
            order,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            certify_fraction=certify_fraction,
        )
    # Positions are dealt, and the frame is copied once per split: dealing the frame itself
    # copied it twice over (1.3 s and a table's worth of memory at 1M rows), for the same rows
    # in the same order. The test and validation rows are dealt as before certification rows
    # existed; the certification rows come out of what trained.
    labels = None if task.is_regression else frame[target].to_numpy()
    rest, test = _cut(np.arange(n), n_test, labels, seed)
    train, val = _cut(rest, n_val, labels, seed)
    train, certify = _cut(train, n_certify, labels, seed)
    return frame.take(train), frame.take(val), frame.take(certify), frame.take(test)


def _check_sizes(
    n: int, n_val: int, n_test: int, n_certify: int, certifies: bool, source: str
) -> None:
    """Every split has `MIN_ROWS_PER_SPLIT` rows, or a one-line error giving the sizes."""
    n_train = n - n_val - n_test - n_certify
    sizes = [n_train, n_val, n_test] + ([n_certify] if certifies else [])
    if min(sizes) >= MIN_ROWS_PER_SPLIT:
        return
    shown = f"{n_train}/{n_val}/" + (f"{n_certify}/" if certifies else "") + f"{n_test}"
    names = "train/validation/" + ("certification/" if certifies else "") + "test"
    raise TabslimInputError(
        f"{source} has too few rows to split: {n} rows with a known target give "
        f"{shown} {names} rows, and each split needs at least {MIN_ROWS_PER_SPLIT}"
    )


def _cut(
    rows: np.ndarray, size: int, labels: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`rows` dealt into the rest and `size` of them, stratified by `labels` (the classes;
    None for regression) where each class has at least two of the rows."""
    if size == 0:
        return rows, rows[:0]
    stratify = None
    if labels is not None and pd.Series(labels[rows]).value_counts().min() >= 2:
        stratify = labels[rows]
    try:
        return train_test_split(rows, test_size=size, random_state=seed, stratify=stratify)
    except ValueError:  # too few rows of a class for the stratified sizes
        return train_test_split(rows, test_size=size, random_state=seed)


def split_in_time(
    frame: pd.DataFrame,
    order: pd.Series,
    *,
    val_fraction: float,
    test_fraction: float,
    certify_fraction: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Earliest rows train, the next validate, the next certify, the latest test: the future
    stays unseen, and a certificate is read on rows later than any that chose the model."""
    ranked = frame.iloc[order.reset_index(drop=True).argsort(kind="stable").to_numpy()]
    n = len(ranked)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_certify = round(n * certify_fraction)
    train_end = n - n_val - n_certify - n_test
    val_end = train_end + n_val
    certify_end = val_end + n_certify
    return (
        ranked.iloc[:train_end],
        ranked.iloc[train_end:val_end],
        ranked.iloc[val_end:certify_end],
        ranked.iloc[certify_end:],
    )
