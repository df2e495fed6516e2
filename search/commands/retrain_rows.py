"""The new rows `tabslim retrain` reads: checked against the champion, their labels split from
those still to come, fingerprinted, split into a training window and a holdout after it, and
what a promotion rests on, in words."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_modules.columns import time_order
from lightning_modules.errors import TabslimInputError
from lightning_modules.tables import read_table
from search.monitor import check_quality, coerced_target, refuse_broken

__all__ = [
    "check_input",
    "evidence_words",
    "fingerprint",
    "labelled_too_few",
    "read_new_rows",
    "split",
]

_MIN_HOLDOUT_ROWS = 20


def fingerprint(path: str, target: str, time_column: str | None) -> str:
    """The data and how it is read; not the champion's version, which a promotion changes."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(f"{target}|{time_column}".encode())
    return digest.hexdigest()[:16]


def split(frame: pd.DataFrame, holdout: float, time_column: str | None, seed: int) -> tuple:
    n_holdout = round(len(frame) * holdout)
    if time_column is not None:
        ordered = frame.iloc[time_order(frame, time_column).argsort(kind="stable").to_numpy()]
    else:
        ordered = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
    return ordered.iloc[: len(frame) - n_holdout], ordered.iloc[len(frame) - n_holdout :]


def check_input(frame: pd.DataFrame, profile: dict, target: str) -> None:
    if target not in frame.columns and target != profile["target"]:
        raise TabslimInputError(
            f"the new data has no target column {target!r}; the champion predicts "
            f"{profile['target']!r}, whose rows may come unlabelled"
        )
    missing = [c for c in profile["columns"] if c not in frame.columns]
    if missing:
        raise TabslimInputError(f"the new data lacks the columns {missing}, which the model takes")


def labelled_too_few(labelled: int, holdout: float) -> str | None:
    """Why `labelled` rows cannot train and judge challengers; None when they can."""
    if round(labelled * holdout) < _MIN_HOLDOUT_ROWS or labelled - round(labelled * holdout) < 60:
        return (
            f"{labelled} labelled rows are too few for a holdout of {holdout:g} (it needs "
            f"{_MIN_HOLDOUT_ROWS} rows, and the window at least 60)"
        )
    return None


def read_new_rows(
    data_path: str,
    target: str,
    profile: dict,
    network_dir: Path,
    holdout: float,
    time_column: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame, int, str | None]:
    """All the new rows, the labelled ones, how many are unlabelled, and why the labelled are
    too few to train and judge challengers (None: they are not). Raises on bad input."""
    everything = read_table(data_path)
    check_input(everything, profile, target)
    # Before anything is trained, promoted or marked handled: a model retrained on a broken
    # column learns from the values the preprocessing imputed.
    refuse_broken(check_quality(profile, everything))
    everything = coerced_target(everything, target, network_dir, data_path)
    # Rows whose labels have not come yet are judged by the estimate alone; challengers train
    # and are judged on the labelled ones.
    if target in everything.columns:
        frame = everything[everything[target].notna()].reset_index(drop=True)
    else:
        frame = everything.iloc[:0]
    unlabelled = len(everything) - len(frame)
    too_few = labelled_too_few(len(frame), holdout)
    if too_few and not unlabelled:
        raise TabslimInputError(too_few)
    if time_column is not None:
        time_order(everything, time_column)  # a one-line error for a column that does not parse
    return everything, frame, unlabelled, too_few


def evidence_words(
    time_column: str | None,
    window_rows: int,
    holdout_rows: int,
    unlabelled: int,
    estimate: Any,
) -> str:
    """What a promotion would rest on, in words: which rows called for it, which trained the
    challengers, and which judged them."""
    where = (
        f" (ordered by {time_column}, the holdout after the window)"
        if time_column
        else " (a seeded random split)"
    )
    words = (
        f"challengers trained on {window_rows} labelled rows and judged, paired against the "
        f"champion, on the {holdout_rows} labelled rows of the holdout{where}"
    )
    if unlabelled:
        judged = f"its {estimate.method} estimate" if estimate is not None else "their drift alone"
        words += (
            f"; {unlabelled} rows without labels yet were judged by {judged}, and train "
            "and judge nothing"
        )
    return words
