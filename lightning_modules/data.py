"""Tabular data: read and check a table, split it, preprocess it and serve in-memory batches.

Everything is checked and prepared when the data module is built, before anything is trained
or logged, so bad input fails early and leaves no half-written run behind.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from lightning_modules import anomaly
from lightning_modules.anomaly import positive_class
from lightning_modules.batches import InMemoryBatches
from lightning_modules.columns import plan_columns, time_order
from lightning_modules.datasets import TARGET, load_bundled
from lightning_modules.errors import TabslimInputError, shown
from lightning_modules.preprocessing import Preprocessor, classes_task, infer_task
from lightning_modules.splits import MIN_ROWS_PER_SPLIT, split
from lightning_modules.tables import read_table
from lightning_modules.task import Task

# Training batches that one Lightning step receives; `TabularModule` steps its optimiser once
# per batch, so the training is the same as one batch per step.
TRAIN_BATCHES_PER_STEP = 8
# Share of a fold's training rows that early-stops its networks (`refolded`): the rows a fold
# scores must not also have stopped the networks it scores.
INNER_VAL_FRACTION = 0.15
# A classification target with more classes than this is checked: fractional values are a
# number, and more classes than this share of the rows leave classes without rows to learn.
# (30 is also the most classes an integer target may have to be inferred as classes.)
_FEW_CLASSES, _MAX_CLASS_SHARE = 30, 0.2

__all__ = [
    "INNER_VAL_FRACTION",
    "TRAIN_BATCHES_PER_STEP",
    "InMemoryBatches",
    "TabularDataModule",
    "check_table",
    "table_notes",
]


def check_table(frame: pd.DataFrame, target: str, task: str | None, source: str) -> Task:
    """Check the table for the task and return the task: parsed from its name, resolved from
    "classification" by the target's classes, or inferred when None."""
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise TabslimInputError(
            f"target column '{target}' is not in {source}; its columns are: {columns}"
        )
    y = frame[target]
    if y.isna().all():
        raise TabslimInputError(f"target column '{target}' in {source} is entirely missing")
    empty = [str(c) for c in frame.columns if c != target and frame[c].isna().all()]
    if empty:
        raise TabslimInputError(
            f"column '{empty[0]}' in {source} is entirely missing; drop it or fill it"
        )
    if len(frame.columns) < 2:
        raise TabslimInputError(f"{source} has no feature columns besides the target '{target}'")
    parsed = _parsed_task(task, y)
    _check_target(y, parsed, target, source)
    return parsed


def _parsed_task(task: str | None, y: pd.Series) -> Task:
    """The task a config names: "classification" and None (inferred) are resolved by `y`."""
    if task is None:
        return infer_task(y)
    # "classification" is a config's name only: binary or multiclass by the target's classes.
    if task == "classification":
        return classes_task(y)
    try:
        return Task(task)
    except ValueError:
        names = ["classification", *(t.value for t in Task)]
        raise TabslimInputError(f"task must be one of {names}, but got task={task!r}") from None


def _check_target(y: pd.Series, task: Task, target: str, source: str) -> None:
    """The target column fits `task`, or a one-line error saying how it does not."""
    if task.is_regression and not (
        pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    ):
        raise TabslimInputError(
            f"target column '{target}' in {source} is not numeric, but the task is regression; "
            "use a numeric target or task: classification"
        )
    if task.is_anomaly:
        positive_class(y, target, source)
    if task.is_classification:
        _check_classes(y.dropna(), target, source)
    if not task.is_regression and y.dropna().nunique() < 2:
        raise TabslimInputError(
            f"target column '{target}' in {source} has a single class "
            f"({shown(y.dropna().iloc[0])}); classification needs at least two"
        )


def _check_classes(y: pd.Series, target: str, source: str) -> None:
    """Refuse a classification target that is a number or an identifier, before any memory is
    spent on it: every class costs an output unit, a probability column and a calibrator, and
    2,400 float values taken as classes ran a 24 GB machine out of memory."""
    n_classes = int(y.nunique())
    if n_classes <= _FEW_CLASSES:
        return
    fractional = pd.api.types.is_float_dtype(y) and not bool(
        np.all(np.mod(y.to_numpy(dtype=float), 1) == 0)
    )
    if not fractional and n_classes <= len(y) * _MAX_CLASS_SHARE:
        return
    examples = ", ".join(
        f"{v:.4g}" if isinstance(v, float) else shown(v) for v in y.drop_duplicates()[:3].tolist()
    )
    why = "fractional numbers" if fractional else f"more than {_MAX_CLASS_SHARE:.0%} of the rows"
    raise TabslimInputError(
        f"target column '{target}' in {source} has {n_classes:,} distinct values in "
        f"{len(y):,} rows (e.g. {examples}), {why}: too many to be classes; if it is a number to "
        "predict, use --task regression"
    )


def table_notes(frame: pd.DataFrame, target: str) -> list[str]:
    """What a user would want to hear about the table before training: one line each.

    Nothing here stops training; these are columns and rows that train without error but
    likely not as meant (an ID becomes an embedding with a category per row).
    """
    notes = []
    missing = int(frame[target].isna().sum())
    if missing:
        notes.append(f"{missing} rows have no target value and are left out")
    # Identifiers and dates are left out before this (`lightning_modules.columns`).
    constant = [str(c) for c in frame.columns if c != target and _is_constant(frame[c])]
    if constant:
        notes.append(f"{_columns(constant)} a single value; it carries nothing, drop it")
    return notes


def _is_constant(column: pd.Series) -> bool:
    """One value besides gaps; numeric columns by their extremes, without hashing every row
    (nunique over 45 columns of 1M rows took 2 s)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        low, high = column.min(), column.max()
        return bool(pd.notna(low) and low == high)
    return bool(column.dropna().nunique() == 1)


def _columns(names: list[str]) -> str:
    """ "column 'a' has", or "3 columns have ('a', 'b', 'c')", for a note."""
    if len(names) == 1:
        return f"column '{names[0]}' has"
    shown = ", ".join(f"'{n}'" for n in names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} columns ({shown}) have"


class TabularDataModule(pl.LightningDataModule):
    """A checked, split and preprocessed table, serving in-memory batches.

    Build it with `from_frame`, `from_path` or `from_bundled`.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        target: str,
        *,
        task: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        certify_fraction: float = 0.0,
        batch_size: int = 256,
        seed: int = 0,
        source: str = "the table",
        drop_columns: Sequence[str] = (),
        time_column: str | None = None,
        preprocessor: Preprocessor | None = None,
        anomaly_fpr: float = anomaly.DEFAULT_FPR,
    ) -> None:
        super().__init__()
        plan = plan_columns(frame, target, drop=drop_columns, time_column=time_column)
        order = time_order(frame, time_column) if time_column is not None else None
        features = frame.drop(columns=list(plan.dropped))
        self.task = check_table(features, target, task, source)
        self.notes = plan.notes() + table_notes(features, target)
        # Which columns are not features, and why: the reference profile records it.
        self.dropped, self.time_column = plan.dropped, time_column
        known_rows = features[target].notna().to_numpy()
        # Without gaps in the target, no copy (pandas copies on write).
        known = (features if known_rows.all() else features[known_rows]).reset_index(drop=True)
        classes = None if self.task.is_regression else sorted(known[target].unique().tolist())
        if self.task.is_anomaly:
            positive = positive_class(known[target], target, source)
            classes = [next(c for c in known[target].unique() if c != positive), positive]
        # Task anomaly: recall is reported at this false-positive rate.
        self.anomaly_fpr = anomaly_fpr
        self.train_frame, self.val_frame, self.certify_frame, self.test_frame = split(
            known,
            target,
            self.task,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            certify_fraction=certify_fraction,
            seed=seed,
            source=source,
            order=order[known_rows] if order is not None else None,
        )
        # A given preprocessor (a model's own, to fine-tune it on new rows) is kept as it is.
        self.preprocessor = preprocessor or Preprocessor.fit(
            self.train_frame, target, self.task, classes
        )
        self.target = target
        self.batch_size = batch_size
        self.seed = seed
        self.source = source
        self.tensors = {name: self._tensors(part) for name, part in self._parts().items()}
        if self.task.is_anomaly:
            self._keep_normal_training_rows()

    def _keep_normal_training_rows(self) -> None:
        """An autoencoder learns what normal rows look like: it trains on those only."""
        if self.preprocessor.d_num == 0:
            raise TabslimInputError(
                f"task anomaly reconstructs numeric columns, but {self.source} has none "
                "besides the target"
            )
        train, val = self.tensors["train"]["y"].numpy(), self.tensors["val"]["y"].numpy()
        anomaly.check_splits(train, val, self.target)
        normal = self.tensors["train"]["y"] == 0
        self.tensors["train"] = {k: v[normal] for k, v in self.tensors["train"].items()}

    def _parts(self) -> dict[str, pd.DataFrame]:
        """The frames by split name; "certify" only where the split has certification rows."""
        parts = {"train": self.train_frame, "val": self.val_frame, "test": self.test_frame}
        if len(self.certify_frame):
            parts["certify"] = self.certify_frame
        return parts

    @property
    def has_certification(self) -> bool:
        """Whether rows are held out to certify (`SPLIT_JOBS`)."""
        return "certify" in self.tensors

    @property
    def calibration_split(self) -> str:
        """The rows that calibrate what is fitted after training (estimators, the profile's
        reference metric): the certification rows, which chose nothing; the validation rows
        only where there are none (a module built for one fit)."""
        return "certify" if self.has_certification else "val"

    def frame_of(self, split: str) -> pd.DataFrame:
        return self._parts()[split]

    def refolded(self, fold: int, n_folds: int, seed: int = 0) -> TabularDataModule:
        """The same table with its training and validation rows dealt again, for cross-fitting
        (`search.confirm_by: folds`): the `fold`-th of `n_folds` seeded parts is held out as
        this module's "certify" rows, and the others train, less an inner early-stopping split
        ("val", `INNER_VAL_FRACTION` of them): the rows a fold scores never stopped the
        networks it scores. The preprocessing is refitted on the fold's training rows; the
        test rows stay. Over all folds every training or validation row is held out once."""
        if not 0 <= fold < n_folds or n_folds < 2:
            raise ValueError(f"need 0 <= fold < n_folds and n_folds >= 2, got {fold=}, {n_folds=}")
        rows = pd.concat([self.train_frame, self.val_frame], ignore_index=True)
        parts = np.array_split(np.random.default_rng(seed).permutation(len(rows)), n_folds)
        rest = rows.drop(index=parts[fold])
        inner = np.random.default_rng(seed + 1 + fold).permutation(len(rest))
        n_inner = max(MIN_ROWS_PER_SPLIT, round(len(rest) * INNER_VAL_FRACTION))
        clone = copy.copy(self)
        clone.certify_frame = rows.iloc[np.sort(parts[fold])].reset_index(drop=True)
        clone.val_frame = rest.iloc[np.sort(inner[:n_inner])].reset_index(drop=True)
        clone.train_frame = rest.iloc[np.sort(inner[n_inner:])].reset_index(drop=True)
        clone.preprocessor = Preprocessor.fit(
            clone.train_frame, self.target, self.task, self.preprocessor.classes or None
        )
        clone.tensors = {name: clone._tensors(part) for name, part in clone._parts().items()}
        if self.task.is_anomaly:
            clone._keep_normal_training_rows()
        return clone

    def with_teacher(self, outputs: torch.Tensor) -> TabularDataModule:
        """The same data, whose training batches also carry a teacher's outputs ("teacher"),
        row for row; validation and test batches are unchanged."""
        train = self.tensors["train"]
        if len(outputs) != len(train["y"]):
            raise ValueError(
                f"teacher outputs must have one row per training row ({len(train['y'])}), "
                f"but got {len(outputs)}"
            )
        clone = copy.copy(self)
        clone.tensors = {**self.tensors, "train": {**train, "teacher": outputs}}
        return clone

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, target: str, **kwargs: Any) -> TabularDataModule:
        return cls(frame, target, **kwargs)

    @classmethod
    def from_path(cls, path: str | Path, target: str, **kwargs: Any) -> TabularDataModule:
        kwargs.setdefault("source", f"'{path}'")
        return cls(read_table(path), target, **kwargs)

    @classmethod
    def from_bundled(cls, name: str, **kwargs: Any) -> TabularDataModule:
        kwargs.setdefault("source", f"bundled dataset '{name}'")
        return cls(load_bundled(name, seed=kwargs.get("seed", 0)), TARGET, **kwargs)

    def _tensors(self, part: pd.DataFrame) -> dict[str, torch.Tensor]:
        tensors = self.preprocessor.transform(part)
        tensors["y"] = self.preprocessor.encode_target(part[self.target])
        return tensors

    @property
    def n_classes(self) -> int:
        return len(self.preprocessor.classes)

    def network_inputs(self) -> dict[str, Any]:
        """The spec fields the data fixes: input widths, categorical cardinalities, outputs."""
        return {
            "d_num": self.preprocessor.d_num,
            "cat_cardinalities": self.preprocessor.cat_cardinalities,
            "d_out": self.preprocessor.d_out,
        }

    def train_dataloader(self) -> InMemoryBatches:
        # The batch order follows the training seed (set by seed_everything before Lightning
        # asks for this loader), not the split seed: runs with other seeds then vary it too.
        # Grouped: Lightning's fixed cost per step (hooks, closures, about 0.6 ms on 2 CPU
        # cores) is paid once per group, while the module still takes one optimiser step per
        # batch (bench/train_overhead.py). On the trainer's device (a GPU) once per fit;
        # `self.tensors` stay on the CPU for everything else.
        return InMemoryBatches(
            self.tensors["train"],
            self.batch_size,
            shuffle=True,
            seed=torch.initial_seed(),
            batches_per_item=TRAIN_BATCHES_PER_STEP,
            device=InMemoryBatches.trainer_device(self.trainer),
        )

    def val_dataloader(self) -> InMemoryBatches:
        # Evaluation batches are large: no gradients, so memory is not the limit.
        return InMemoryBatches(
            self.tensors["val"],
            max(self.batch_size, 4096),
            shuffle=False,
            device=InMemoryBatches.trainer_device(self.trainer),
        )

    def test_dataloader(self) -> InMemoryBatches:
        # Built only when the test split is evaluated, so only then does it move to a device.
        return InMemoryBatches(
            self.tensors["test"],
            max(self.batch_size, 4096),
            shuffle=False,
            device=InMemoryBatches.trainer_device(self.trainer),
        )

    def example_rows(self, n: int = 5) -> pd.DataFrame:
        """A few raw feature rows (no target), e.g. as an input example for a logged model."""
        return self.test_frame.drop(columns=[self.target]).head(n).reset_index(drop=True)
