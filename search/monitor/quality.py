"""Data quality at the door: do new rows still fit what the model was trained on?

Before distributions are compared, each column is held to its training profile
(`search.serving.profile`): the share of values that do not parse as the training type, the
missing share against training's, the share of numbers beyond the training range, and the
share of categories never seen in training. A column whose values are mostly unusable is
**broken**: an upstream export changed its type, or stopped filling it. The preprocessing would
impute every such value, so a drift test on it compares imputations, and a model retrained on
it learns from them; `tabslim drift` names it, and `tabslim retrain` refuses it.

NannyML (missing values, unseen values, numerical range) and Evidently (data quality) check the
same before they compare distributions.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lightning_modules.errors import TabslimInputError
from search.monitor.estimated import Estimated
from search.serving import MISSING

__all__ = [
    "BROKEN_SHARE",
    "TRAINING_MISSING_AT_MOST",
    "ColumnQuality",
    "DataQuality",
    "check_quality",
    "refuse_broken",
    "screen_estimate",
]

# A column is broken when more than this share of its values is unusable: most of them, so
# that a broken feed is told from a dirty one (a few typos, a mild rise in gaps).
BROKEN_SHARE = 0.5
# Missing values break a column only where training had almost none: a column that was often
# empty in training was learned with its gaps (a missing indicator), and gaps are its data.
TRAINING_MISSING_AT_MOST = 0.05


@dataclass(frozen=True)
class ColumnQuality:
    """One column of new rows against its training profile; shares are of all rows."""

    column: str
    kind: str
    # The training type (int64, float64, str, ...); "numeric" or "categorical" for a profile
    # logged before tabslim stored it.
    expected: str
    unparseable: float
    missing: float
    training_missing: float
    # Numeric columns: present values beyond the training range; categorical: 0.
    outside: float = 0.0
    # Categorical columns: values never seen in training (missing ones aside); numeric: 0.
    unseen: float = 0.0
    # One value that does not parse, to show the user what came.
    example: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the column is broken, in words; None when it is not."""
        if self.unparseable > BROKEN_SHARE:
            return (
                f"{self.unparseable:.0%} of its values do not parse as {self.expected}, "
                f"e.g. {self.example!r}"
            )
        unusable = self.unparseable + self.missing
        if unusable > BROKEN_SHARE and self.training_missing <= TRAINING_MISSING_AT_MOST:
            what = "are missing" if not self.unparseable else f"are missing or not {self.expected}"
            return (
                f"{unusable:.0%} of its values {what}, against {self.training_missing:.0%} "
                "missing in training"
            )
        return None

    @property
    def broken(self) -> bool:
        return self.problem is not None


@dataclass
class DataQuality:
    """The data-quality section of a drift report: one entry per feature column."""

    rows: int
    columns: list[ColumnQuality] = field(default_factory=list)
    # (N,) rows holding an unusable value (missing or unparseable) in a broken column.
    broken_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def broken(self) -> list[ColumnQuality]:
        return [c for c in self.columns if c.broken]

    def verdict(self) -> str:
        if not self.broken:
            return f"data quality: no broken column among {len(self.columns)}"
        named = "; ".join(f"{c.column}: {c.problem}" for c in self.broken)
        return (
            f"data quality: {len(self.broken)} of {len(self.columns)} columns BROKEN, so not "
            f"compared for drift ({named})"
        )

    def format_table(self) -> str:
        """Broken columns first, then by the share of unusable values."""
        lines = [
            f"{'column':<24} {'type':<11} {'unparseable':>11} {'missing':>8} {'(training)':>10} "
            f"{'outside':>8} {'unseen':>7}  broken"
        ]
        for c in self.columns:
            lines.append(
                f"{c.column[:24]:<24} {c.expected[:11]:<11} {c.unparseable:>11.1%} "
                f"{c.missing:>8.1%} {c.training_missing:>10.1%} {c.outside:>8.1%} "
                f"{c.unseen:>7.1%}  {'BROKEN' if c.broken else 'no'}"
            )
        return "\n".join([*lines, self.verdict()])

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: `quality_<share>_<column>` per column, and the broken count."""
        found: dict[str, float] = {"quality_broken_columns": float(len(self.broken))}
        for c in self.columns:
            # MLflow metric names take letters, digits and _-. /; the rest becomes _.
            name = re.sub(r"[^A-Za-z0-9_\-. /]", "_", c.column)
            found |= {
                f"quality_unparseable_{name}": c.unparseable,
                f"quality_missing_{name}": c.missing,
                f"quality_outside_{name}": c.outside,
                f"quality_unseen_{name}": c.unseen,
                f"quality_broken_{name}": float(c.broken),
            }
        return found

    def table(self) -> dict[str, list[Any]]:
        """Column-wise, as `mlflow.log_table` takes it."""
        return {
            "column": [c.column for c in self.columns],
            "type": [c.expected for c in self.columns],
            "unparseable": [c.unparseable for c in self.columns],
            "missing": [c.missing for c in self.columns],
            "training_missing": [c.training_missing for c in self.columns],
            "outside_range": [c.outside for c in self.columns],
            "unseen": [c.unseen for c in self.columns],
            "broken": [c.problem or "" for c in self.columns],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "broken_rows": int(self.broken_rows.sum()),
            "columns": [dataclasses.asdict(c) | {"problem": c.problem} for c in self.columns],
        }


def _numeric(name: str, ref: dict[str, Any], values: pd.Series) -> tuple[ColumnQuality, Any]:
    """The column's quality, and (N,) which of its values are unusable."""
    expected = str(ref.get("dtype", "numeric"))
    x = pd.to_numeric(values, errors="coerce").astype(float)
    missing = values.isna().to_numpy()
    bad = x.isna().to_numpy() & ~missing
    if expected.startswith(("int", "uint")):
        # A fraction in a column trained on whole numbers does not parse as its type either
        # (MLflow's schema refuses it too).
        bad |= (np.mod(x.fillna(0).to_numpy(), 1) != 0) & ~missing
    example = str(values[bad].iloc[0]) if bad.any() else None
    edges = ref.get("bin_edges") or []
    good = x.to_numpy()[~(bad | missing)]
    outside = ((good < edges[0]) | (good > edges[-1])).sum() if edges else 0
    rows = max(len(values), 1)
    quality = ColumnQuality(
        name,
        "numeric",
        expected,
        float(bad.mean()) if len(values) else 0.0,
        float(missing.mean()) if len(values) else 0.0,
        float(ref["missing_rate"]),
        outside=float(outside) / rows,
        example=example,
    )
    return quality, bad | missing


def _categorical(name: str, ref: dict[str, Any], values: pd.Series) -> tuple[ColumnQuality, Any]:
    labels = values.astype("string").fillna(MISSING)
    missing = values.isna().to_numpy()
    unseen = (~labels.isin(list(ref["frequencies"]))).to_numpy() & ~missing
    rows = max(len(values), 1)
    quality = ColumnQuality(
        name,
        "categorical",
        str(ref.get("dtype", "categorical")),
        0.0,
        float(missing.sum()) / rows,
        float(ref["missing_rate"]),
        unseen=float(unseen.sum()) / rows,
    )
    return quality, missing


def check_quality(profile: dict[str, Any], frame: pd.DataFrame) -> DataQuality:
    """Each feature column of `frame` against `profile`, broken columns first."""
    found = []
    broken_rows = np.zeros(len(frame), dtype=bool)
    for name, ref in profile["columns"].items():
        measure = _numeric if ref["type"] == "numeric" else _categorical
        quality, unusable = measure(name, ref, frame[name])
        if quality.broken:
            broken_rows |= unusable
        found.append(quality)
    found.sort(key=lambda c: (not c.broken, -(c.unparseable + c.missing)))
    return DataQuality(len(frame), found, broken_rows)


def refuse_broken(quality: DataQuality) -> None:
    """One line naming each broken column and what was wrong, for a command that must not go on."""
    if quality.broken:
        named = "; ".join(f"column {c.column!r}: {c.problem}" for c in quality.broken)
        raise TabslimInputError(
            f"the new data has broken columns, so nothing was retrained ({named}); fix the "
            "feed, or drop the rows, and run again"
        )


def screen_estimate(
    quality: DataQuality, estimated: Estimated | None, unlabelled: np.ndarray
) -> tuple[Estimated | None, str | None]:
    """The estimate with the count of its rows that had broken columns, or, when most did,
    no estimate and the reason: the model scored those rows on imputed values.

    Args:
        unlabelled: (N,) the rows the estimate was made on.
    """
    hit = int((quality.broken_rows & unlabelled).sum()) if len(quality.broken_rows) else 0
    if estimated is None or hit == 0:
        return estimated, None
    columns = tuple(c.column for c in quality.broken)
    if hit > BROKEN_SHARE * estimated.rows:
        return None, (
            f"estimate withheld: {hit:,} of the {estimated.rows:,} unlabelled rows have an "
            f"unusable value in the broken columns {', '.join(columns)}, which the model "
            "imputes; an estimate on such rows would describe the imputation, not the data"
        )
    return dataclasses.replace(estimated, broken_rows=hit, broken_columns=columns), None
