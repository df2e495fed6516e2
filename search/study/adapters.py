"""From the validated config to what the other packages take, shared by every command.

`lightning_modules` and `pruning` know nothing of the YAML config; these functions translate it
(data module, baseline spec, fit settings, thread count) and assemble the flat metric dicts
that trials and runs record.
"""

from __future__ import annotations

import hashlib
import os
import sys

import pandas as pd
import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.family import NetworkSpec
from lightning_modules.networks import baseline_spec as kind_baseline
from lightning_modules.training import FitSettings
from search.config import Config
from search.measure import Measurement


def load_data(config: Config) -> TabularDataModule:
    """The configured table, checked, split and preprocessed (raises on bad input).

    Its notes (rows without a target, identifier-like or constant columns) are in `.notes`;
    `print_notes` shows them.
    """
    data = config.data
    kwargs = {
        "task": None if data.task == "auto" else data.task,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "batch_size": config.training.batch_size,
        "seed": data.seed,
        "drop_columns": data.drop_columns,
        "time_column": data.time_column,
        "anomaly_fpr": data.anomaly_fpr,
    }
    if data.path is not None:
        module = TabularDataModule.from_path(data.path, data.target, **kwargs)
    else:
        assert data.dataset is not None, "config validation guarantees a source"
        module = TabularDataModule.from_bundled(data.dataset, **kwargs)
    return module


def print_notes(data: TabularDataModule) -> None:
    """The table's notes on stderr, one line each: not errors, but worth a look.

    Commands call this once their input is accepted, so that a bad-input error stays the only
    line, and worker processes, which load the same table, stay quiet.
    """
    for note in data.notes:
        print(f"tabslim: note: {note}", file=sys.stderr)


def baseline_spec(config: Config, data: TabularDataModule) -> NetworkSpec:
    """The configured baseline network, with inputs and outputs that fit `data`."""
    spec: NetworkSpec = kind_baseline(
        config.model.kind, config.model.options, **data.network_inputs()
    )
    return spec


def fit_settings(config: Config, *, progress_bar: bool = False) -> FitSettings:
    """The `training` section as `fit` takes it."""
    training = config.training
    return FitSettings(
        max_epochs=training.max_epochs,
        lr=training.lr,
        weight_decay=training.weight_decay,
        patience=training.patience,
        seed=training.seed,
        accelerator=training.accelerator,
        progress_bar=progress_bar,
    )


def set_training_threads(config: Config, workers: int = 1) -> int:
    """Fix torch's CPU thread count for training; returns it.

    One thread by default: a tabular MLP gains little from more, and on a busy machine (other
    workers, other jobs) OpenMP threads that wait on each other made a small fit 10-30x slower
    here. 0 shares all cores among the workers.
    """
    wanted = config.training.threads
    threads = wanted if wanted > 0 else max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


def data_params(data: TabularDataModule) -> dict[str, object]:
    """What the run was trained on, as MLflow parameters."""
    return {
        "data.source": data.source,
        "data.target": data.target,
        "data.task": data.task,
        "data.rows_train": len(data.train_frame),
        "data.rows_val": len(data.val_frame),
        "data.rows_test": len(data.test_frame),
    }


def run_metrics(
    val_metrics: dict[str, float],
    test_metrics: dict[str, float],
    measured: Measurement,
    **extra: float,
) -> dict[str, float]:
    """One flat dict: `val_*` and `test_*` task metrics, size and latency, and `extra`."""
    metrics = {f"val_{k}": v for k, v in val_metrics.items()}
    metrics |= {f"test_{k}": v for k, v in test_metrics.items()}
    metrics |= measured.to_metrics()
    metrics |= {k: float(v) for k, v in extra.items()}
    return metrics


def data_fingerprint(data: TabularDataModule) -> str:
    """A digest of the table as split (rows, values, split membership): the same file read on
    another node gives the same digest, a changed row or another split seed does not."""
    digest = hashlib.sha256()
    for frame in (data.train_frame, data.val_frame, data.test_frame):
        digest.update(str(list(frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()
