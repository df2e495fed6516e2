"""The table a run or a study trains on, read as the config says, and how they record it.

`lightning_modules` knows nothing of the YAML config; these functions translate its data
section into a data module, print what was inferred, and name the data in MLflow and in the
study (a fingerprint that workers compare).
"""

from __future__ import annotations

import hashlib
import shlex
import sys

import pandas as pd

from lightning_modules.data import TabularDataModule
from lightning_modules.tables import read_table
from search.config import Config
from search.measure import Phases

__all__ = ["data_fingerprint", "data_params", "load_data", "print_notes"]


def load_data(config: Config, phases: Phases | None = None) -> TabularDataModule:
    """The configured table, checked, split and preprocessed (raises on bad input).

    `phases`, when given, gets the seconds spent reading the file ("read") and the rest
    ("preprocess").

    Its notes (rows without a target, identifier-like or constant columns) are in `.notes`;
    `print_notes` shows them.
    """
    data = config.data
    kwargs = {
        "task": None if data.task == "auto" else data.task,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "certify_fraction": data.certify_fraction,
        "batch_size": config.training.batch_size,
        "seed": data.seed,
        "drop_columns": data.drop_columns,
        "time_column": data.time_column,
        "anomaly_fpr": data.anomaly_fpr,
    }
    phases = phases or Phases()
    if data.path is None:
        assert data.dataset is not None, "config validation guarantees a source"
        with phases("preprocess"):
            return TabularDataModule.from_bundled(data.dataset, **kwargs)
    with phases("read"):
        frame = read_table(data.path, sample_rows=data.sample_rows, seed=data.seed)
    with phases("preprocess"):
        module = TabularDataModule.from_frame(frame, data.target, source=f"'{data.path}'", **kwargs)
    in_file = frame.attrs.get("rows_in_file", len(frame))
    if len(frame) < in_file:
        module.notes.append(
            f"data.sample_rows: working on a seeded sample of {len(frame)} of the {in_file} rows "
            f"of {data.path}; once a search has registered STUDY@champion, train its shape on "
            f"all of them with `tabslim retrain --model STUDY --data {shlex.quote(data.path)} "
            f"--target {shlex.quote(str(data.target))} --force`"
        )
    return module


def print_notes(data: TabularDataModule) -> None:
    """The table's notes on stderr, one line each: not errors, but worth a look.

    Commands call this once their input is accepted, so that a bad-input error stays the only
    line, and worker processes, which load the same table, stay quiet.
    """
    for note in data.notes:
        print(f"tabslim: note: {note}", file=sys.stderr)


def data_params(data: TabularDataModule) -> dict[str, object]:
    """What the run was trained on, as MLflow parameters."""
    return {
        "data.source": data.source,
        "data.target": data.target,
        "data.task": data.task.value,
        "data.rows_train": len(data.train_frame),
        "data.rows_val": len(data.val_frame),
        "data.rows_certify": len(data.certify_frame),
        "data.rows_test": len(data.test_frame),
    }


def data_fingerprint(data: TabularDataModule) -> str:
    """A digest of the table as split (rows, values, split membership): the same file read on
    another node gives the same digest, a changed row or another split seed does not."""
    digest = hashlib.sha256()
    for frame in (data.train_frame, data.val_frame, data.certify_frame, data.test_frame):
        digest.update(str(list(frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()
