"""Preprocessing of a raw table, fitted on the training split only and stored as plain data.

Numeric columns are imputed (median) and standardised, with a missing-indicator column for each
column that had gaps in training. Categorical columns map to embedding indices, index 0 being
reserved for categories unseen at training time. The fitted state is JSON-ready, so it travels
with a model without pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task

if TYPE_CHECKING:
    import torch

# An integer target with at most this many distinct values is taken as classes.
_MAX_INFERRED_CLASSES = 30
_MISSING = "<missing>"
# How a missing category is spelled once read; the served graph takes gaps in this form.
MISSING_CATEGORY = _MISSING
# Rows transformed at once; see `transform_arrays`.
_BLOCK_ROWS = 65_536


def classes_task(target: pd.Series) -> Task:
    """Binary for at most two distinct values, else multiclass."""
    return Task.BINARY if target.dropna().nunique() <= 2 else Task.MULTICLASS


def infer_task(target: pd.Series) -> Task:
    """binary, multiclass or regression, from the target's dtype and distinct values."""
    values = target.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return classes_task(values)
    is_integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    if is_integral and values.nunique() <= _MAX_INFERRED_CLASSES:
        return classes_task(values)
    return Task.REGRESSION


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _numbers(column: pd.Series) -> np.ndarray:
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiub":
        # Plain NumPy numbers, whose gaps are NaN already (nullable ones go below).
        return np.ascontiguousarray(column.to_numpy(dtype=np.float64))
    try:
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.ascontiguousarray(values)


def _strings(column: pd.Series) -> np.ndarray:
    values = column.to_numpy()
    # The common case, already what ONNX Runtime takes: only strings, no gaps. `infer_dtype`
    # checks in C; a Python loop over the values cost more than the network at 1,024 rows.
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    # A category's string form, gaps as the missing category: as `_category_block` reads it.
    return column.astype("string").fillna(_MISSING).to_numpy(dtype=object)


@dataclass
class Preprocessor:
    """Fitted preprocessing; build with `Preprocessor.fit`, store with `to_dict`."""

    target: str
    task: Task
    numeric: list[str] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    classes: list[Any] = field(default_factory=list)
    # Task anomaly: the served model flags a row whose reconstruction error is at least this
    # (chosen on validation for one network: `lightning_modules.evaluation.serving_preprocessor`).
    anomaly_threshold: float | None = None
    target_mean: float = 0.0
    target_std: float = 1.0

    def __post_init__(self) -> None:
        # A stored preprocessor (`from_dict`) holds the task's name.
        self.task = Task(self.task)

    @classmethod
    def fit(
        cls, train: pd.DataFrame, target: str, task: Task | str, classes: list[Any] | None = None
    ) -> Preprocessor:
        """Fit on the training split.

        Args:
            classes: all class labels of the task, known from the whole target column; a label
                is a fact of the task, not a fitted statistic, so this leaks nothing.
        """
        features = train.drop(columns=[target])
        numeric = [c for c in features.columns if _is_numeric(features[c])]
        # Column by column: a float64 copy of all numeric columns at once, and a filled copy
        # of that, were the peak of a 1M-row table's preprocessing.
        medians, means, stds, indicators = [], [], [], []
        for name in numeric:
            column = features[name].astype(float)
            median = column.median()
            median = 0.0 if pd.isna(median) else float(median)
            filled = column.fillna(median)
            std = float(filled.std(ddof=0))
            medians.append(median)
            means.append(float(filled.mean()))
            stds.append(1.0 if std == 0.0 or np.isnan(std) else std)
            if column.isna().any():
                indicators.append(name)
        categorical = {
            c: sorted(features[c].astype("string").fillna(_MISSING).unique().tolist())
            for c in features.columns
            if c not in numeric
        }
        y = train[target]
        prep = cls(
            target=target,
            task=Task(task),
            numeric=numeric,
            medians=medians,
            means=means,
            stds=stds,
            indicators=indicators,
            categorical=categorical,
        )
        if prep.task.is_regression:
            prep.target_mean = float(y.mean())
            prep.target_std = float(y.std(ddof=0)) or 1.0
        elif prep.task.is_anomaly:
            assert classes is not None and len(classes) == 2, "anomaly: [normal, positive]"
            prep.classes = list(classes)  # normal first: the positive class encodes as 1
        else:
            prep.classes = sorted(classes if classes is not None else y.unique().tolist())
        return prep

    @property
    def d_num(self) -> int:
        return len(self.numeric) + len(self.indicators)

    @property
    def cat_cardinalities(self) -> tuple[int, ...]:
        # +1 for index 0, the category never seen in training.
        return tuple(len(v) + 1 for v in self.categorical.values())

    @property
    def d_out(self) -> int:
        if self.task.is_anomaly:
            return self.d_num  # an autoencoder reconstructs the numeric inputs
        return 1 if self.task.is_regression else len(self.classes)

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def transform(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Raw rows -> {"x_num": (N, d_num) float32, "x_cat": (N, n_cat) int64} tensors."""
        import torch

        # No copy: `transform_arrays` returns fresh, writable arrays of its own.
        return {name: torch.from_numpy(a) for name, a in self.transform_arrays(frame).items()}

    def _check_columns(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise TabslimInputError(
                f"input is missing the columns {missing}; the model was trained on "
                f"{self.feature_columns}"
            )

    def transform_arrays(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw rows -> {"x_num": (N, d_num) float32, "x_cat": (N, n_cat) int64} arrays.

        NumPy only, so that a served model needs no torch (ONNX Runtime takes these as they are).
        """
        self._check_columns(frame)
        x_num = np.empty((len(frame), self.d_num), dtype=np.float32)
        x_cat = np.empty((len(frame), len(self.categorical)), dtype=np.int64)
        # In blocks of rows: the float64 intermediates of a whole 700k-row split were twice
        # the size of its tensors, all alive at once. Every step is row by row, so the result
        # is the same.
        for start in range(0, len(frame), _BLOCK_ROWS):
            rows = frame.iloc[start : start + _BLOCK_ROWS]
            x_num[start : start + len(rows)] = self._numeric_block(rows)
            x_cat[start : start + len(rows)] = self._category_block(rows)
        return {"x_num": x_num, "x_cat": x_cat}

    def raw_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw rows -> one (N, 1) array per feature column, as the served ONNX graph takes them
        (`search.measure.served_graph`): float64 numbers with NaN for gaps (text coerced, as
        `transform_arrays` does), and strings with gaps as `MISSING_CATEGORY`."""
        self._check_columns(frame)
        arrays = {name: _numbers(frame[name]).reshape(-1, 1) for name in self.numeric}
        for name in self.categorical:
            arrays[name] = _strings(frame[name]).reshape(-1, 1)
        return arrays

    def _numeric_block(self, rows: pd.DataFrame) -> np.ndarray:
        num = rows[self.numeric].apply(pd.to_numeric, errors="coerce").astype(float)
        indicators = num[self.indicators].isna().to_numpy(dtype=np.float32)
        values = (
            num.fillna(dict(zip(self.numeric, self.medians, strict=True))).to_numpy()
            - np.asarray(self.means)
        ) / np.asarray(self.stds)
        return np.concatenate([values.astype(np.float32), indicators], axis=1)

    def _category_block(self, rows: pd.DataFrame) -> np.ndarray:
        codes = []
        for column, vocabulary in self.categorical.items():
            lookup = {v: i + 1 for i, v in enumerate(vocabulary)}
            raw = rows[column].astype("string").fillna(_MISSING)
            codes.append(raw.map(lookup).fillna(0).to_numpy(dtype=np.int64))
        return np.stack(codes, axis=1) if codes else np.zeros((len(rows), 0), dtype=np.int64)

    def encode_target(self, y: pd.Series) -> torch.Tensor:
        """Class labels -> int64 indices; regression values -> standardised float32 (N, 1)."""
        import torch

        if self.task.is_regression:
            scaled = (y.to_numpy(dtype=float) - self.target_mean) / self.target_std
            return torch.tensor(scaled, dtype=torch.float32).unsqueeze(1)
        lookup = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor(y.map(lookup).to_numpy(dtype=np.int64))

    def decode(
        self, output: torch.Tensor, x_num: torch.Tensor | None = None
    ) -> dict[str, np.ndarray]:
        """Network outputs -> predictions in the target's own terms (and class probabilities,
        or anomaly scores)."""
        inputs = None if x_num is None else x_num.detach().cpu().numpy().astype(np.float64)
        return self.decode_arrays(output.detach().cpu().numpy(), inputs)

    def decode_arrays(
        self, output: np.ndarray, x_num: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """`decode` for a NumPy output (N, d_out), as ONNX Runtime returns it.

        Args:
            x_num: the preprocessed numeric inputs; task anomaly scores a row by how far its
                reconstruction is from them.
        """
        if self.task.is_anomaly:
            assert x_num is not None, "an anomaly score needs the inputs it reconstructs"
            score = ((output.astype(np.float64) - x_num) ** 2).mean(axis=1)
            threshold = np.inf if self.anomaly_threshold is None else self.anomaly_threshold
            labels = np.where(score >= threshold, self.classes[1], self.classes[0])
            return {"prediction": labels.astype(object), "anomaly_score": score}
        if self.task.is_regression:
            values = output[:, 0].astype(np.float64) * self.target_std + self.target_mean
            return {"prediction": values}
        logits = output.astype(np.float32)
        # Softmax, shifted by the row maximum so that exp cannot overflow.
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        labels = np.asarray(self.classes, dtype=object)[probabilities.argmax(axis=1)]
        return {"prediction": labels, "probabilities": probabilities}

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["task"] = self.task.value  # its name, as preprocessors stored before hold it
        # numpy scalars in labels would break json.dumps.
        data["classes"] = [c.item() if hasattr(c, "item") else c for c in self.classes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(**data)
