"""How the deployed model does on new rows whose labels have not come yet: its metric estimated
by the estimator stored with its profile (`search.serving.estimator`: CBPE for classifiers, DLE
for regressors), with a 95% interval for what the rows would realize.

The estimate sees a shift in the inputs, not in how the target depends on them: the realized
metric, once labels come, is the judge of concept drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.serving import estimate_accuracy, estimate_rmse, load_loss_model, loss_features

__all__ = [
    "LOGGED_BEFORE",
    "OUTSIDE_WARNING",
    "Estimated",
    "estimate_note",
    "estimated_metric",
    "outside_range",
    "unlabelled",
]

# From this share of rows beyond the training range the estimate's line says to trust it less.
OUTSIDE_WARNING = 0.05
# Beyond this share, the estimate is withheld: most of its rows lie where neither estimator
# learned anything (a seasonal table's DLE estimate missed winter by half).
OUTSIDE_WITHHELD = 0.5

LOGGED_BEFORE = (
    "model logged before tabslim stored an estimator; log it again to estimate its metric on "
    "unlabelled rows"
)


@dataclass(frozen=True)
class Estimated:
    """The model's metric estimated on `rows` unlabelled new rows, with a 95% interval, and on
    validation when it was logged (`reference`); `method` is CBPE or DLE."""

    metric: str
    value: float
    low: float
    high: float
    reference: float
    method: str
    rows: int
    # Share of the rows with a numeric value beyond the range the model was trained on, and
    # the column that holds most of them: neither estimator extrapolates there.
    outside: float = 0.0
    outside_column: str | None = None
    # Rows with an unusable value in a broken column (`search.monitor.quality`), scored on
    # what the preprocessing imputed, and those columns.
    broken_rows: int = 0
    broken_columns: tuple[str, ...] = ()

    @property
    def withheld(self) -> bool:
        return self.outside > OUTSIDE_WITHHELD

    def describe(self) -> str:
        if self.withheld:
            return (
                f"estimated {self.metric} ({self.method}) withheld: {self.outside:.0%} of the "
                f"{self.rows:,} unlabelled rows lie beyond the training range (most in "
                f"{self.outside_column}), where the estimate does not extrapolate"
            )
        line = (
            f"estimated {self.metric} ({self.method}) on {self.rows:,} unlabelled rows: "
            f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}] (held-out rows when logged: "
            f"{self.reference:.4f})"
        )
        if self.outside >= OUTSIDE_WARNING:
            line += (
                f"; {self.outside:.0%} of them lie beyond the training range (most in "
                f"{self.outside_column}), where the estimate does not extrapolate: trust it "
                "less"
            )
        if self.broken_rows:
            line += (
                f"; {self.broken_rows:,} of them had a broken column "
                f"({', '.join(self.broken_columns)}), scored on imputed values"
            )
        return line


def outside_range(profile: dict[str, Any], frame: pd.DataFrame) -> tuple[float, str | None]:
    """Share of `frame`'s rows with a numeric feature beyond its profiled training range, and
    the column with the most such rows (None when there are none).

    A calibration or a loss model learned where the model saw rows: beyond that range CBPE
    keeps the confidence the network extrapolates, and DLE's trees the error at the edge.
    """
    beyond = np.zeros(len(frame), dtype=bool)
    worst, worst_count = None, 0
    for name, reference in profile["columns"].items():
        edges = reference.get("bin_edges") or []
        if reference["type"] != "numeric" or not edges or name not in frame.columns:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        out = (values < edges[0]) | (values > edges[-1])
        if out.sum() > worst_count:
            worst, worst_count = name, int(out.sum())
        beyond |= out
    return (float(beyond.mean()) if len(frame) else 0.0), worst


def unlabelled(profile: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """(N,) which rows lack the target: all of them when the column is absent."""
    target = profile["target"]
    if target not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    return frame[target].isna().to_numpy()


def estimate_note(profile: dict[str, Any], frame: pd.DataFrame) -> str | None:
    """Why `frame`'s unlabelled rows get no estimate; None when they get one, or there are none."""
    if not unlabelled(profile, frame).any():
        return None
    if "estimator" not in profile:
        return LOGGED_BEFORE
    reason = profile["estimator"].get("reason")
    return None if reason is None else str(reason)


def estimated_metric(
    profile: dict[str, Any], network_dir: Path, frame: pd.DataFrame, served: pd.DataFrame
) -> Estimated | None:
    """The metric estimated on the rows of `frame` whose target is missing.

    Args:
        network_dir: the model's network folder, which holds a regression's loss model.
        served: the served model's answers for `frame`'s rows (`served_frame`), row for row.

    None when every row is labelled, or the model has no estimator (task anomaly, or logged
    before tabslim stored one; `estimate_note` says which).
    """
    rows = unlabelled(profile, frame)
    estimator = profile.get("estimator") or {}
    method = estimator.get("method")
    if not rows.any() or method is None:
        return None
    if method == "CBPE":
        columns = [c for c in served.columns if str(c).startswith("proba_")]
        probabilities = served[columns].to_numpy(dtype=float)[rows]
        value, low, high = estimate_accuracy(estimator, probabilities)
    else:
        model = load_loss_model(network_dir / estimator["loss_model"])
        predicted = served["prediction"].to_numpy(dtype=float)[rows]
        x = loss_features(frame[rows], estimator["columns"], predicted)
        value, low, high = estimate_rmse(estimator, model, x)
    outside, column = outside_range(profile, frame[rows])
    return Estimated(
        str(estimator["metric"]),
        value,
        low,
        high,
        float(profile["validation"]["value"]),
        str(method),
        int(rows.sum()),
        outside,
        column,
    )
