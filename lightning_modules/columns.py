"""Columns of a table that are not features: identifiers, timestamps, and those the user names.

Real tables carry a customer ID and a signup date beside the features. Embedded as categories
they add a parameter block per row that cannot generalise (measured: a 4k-row table with an ID
and a text timestamp trained a 152k-parameter network instead of 103k, without a word). So:
- a text column whose values are (almost) all distinct, or a whole-number column that counts
  rows, is left out, with a note that names it;
- a column of dates or times (a datetime type, or text that parses as one) is left out as a
  feature, with a note;
- `drop` leaves out the columns the user names;
- `time_column` orders the rows for a split in time (train first, test last), and is never a
  feature.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from lightning_modules.errors import TabslimInputError, shown

__all__ = ["ColumnPlan", "plan_columns", "time_order"]

# A text column with this many rows or more, nearly every value distinct, is an identifier.
_ID_MIN_ROWS = 20
_ID_DISTINCT_SHARE = 0.95
# Text that parses as a date in this share of a sample of its values is a date column.
_DATE_SHARE = 0.95
_DATE_SAMPLE = 200
_DATE_PART = (
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    r"|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d"
)


@dataclass(frozen=True)
class ColumnPlan:
    """Which columns are left out, and why (column -> reason); the time column, if any."""

    dropped: dict[str, str] = field(default_factory=dict)
    time_column: str | None = None

    def notes(self) -> list[str]:
        return [f"column '{c}' is left out: {why}" for c, why in self.dropped.items()]


def _is_row_counter(values: pd.Series) -> bool:
    """Whole numbers that count rows (0, 1, 2, ... or a shuffled run of them): a row index."""
    if not pd.api.types.is_integer_dtype(values):
        return False
    return values.nunique() == len(values) and (
        int(values.max()) - int(values.min()) == len(values) - 1
    )


def _is_dates(values: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    sample = values.dropna().astype(str).head(_DATE_SAMPLE)
    # A date part, not only a clock time: "2:3:1" (a case id) parses as 02:03:01 otherwise.
    if sample.empty or not sample.str.contains(_DATE_PART, regex=True).all():
        return False
    with warnings.catch_warnings():
        # pandas warns when it must guess the format element by element; a guess is enough.
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= _DATE_SHARE)


def _why_not_a_feature(values: pd.Series) -> str | None:
    present = values.dropna()
    if _is_dates(present):
        return "it holds dates or times, which an embedding cannot generalise from"
    if len(present) >= _ID_MIN_ROWS:
        text = not pd.api.types.is_numeric_dtype(present)
        if text and present.nunique() >= _ID_DISTINCT_SHARE * len(present):
            return "nearly every row has its own value, like an identifier"
        if _is_row_counter(present):
            return "it counts rows, like an index"
    return None


def plan_columns(
    frame: pd.DataFrame, target: str, *, drop: Sequence[str] = (), time_column: str | None = None
) -> ColumnPlan:
    """Decide which columns are not features; a one-line error for a name the table lacks."""
    unknown = [c for c in [*drop, *([time_column] if time_column else [])] if c not in frame]
    if unknown:
        raise TabslimInputError(
            f"the table has no column {unknown[0]!r} (named by --drop-columns or "
            f"--time-column); its columns are {list(map(str, frame.columns))}"
        )
    if target in drop or target == time_column:
        raise TabslimInputError(f"the target {target!r} cannot be dropped or be the time column")
    dropped = {c: "named by --drop-columns" for c in drop}
    if time_column is not None:
        dropped[time_column] = "it is the time column, which orders the split"
    for column in frame.columns:
        if column == target or column in dropped:
            continue
        why = _why_not_a_feature(frame[column])
        if why is not None:
            dropped[str(column)] = why
    return ColumnPlan(dropped, time_column)


def time_order(frame: pd.DataFrame, column: str) -> pd.Series:
    """The time column as sortable values, or a one-line error when it cannot be parsed."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = int(parsed.isna().sum() - values.isna().sum())
    if bad or values.isna().any():
        example = values[parsed.isna()].iloc[0]
        raise TabslimInputError(
            f"time column {column!r} cannot be parsed as dates or numbers: {bad or 'some'} "
            f"values such as {shown(example)}"
        )
    return parsed
