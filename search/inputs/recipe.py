"""How a run or a trial trains, from the validated config: the baseline spec, Lightning's fit
settings, the CPU thread count, and the flat metric dicts that trials and runs record.
"""

from __future__ import annotations

import os

import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import NetworkSpec, kind_baseline_spec
from lightning_modules.training import FitSettings
from search.config import Config
from search.measure import Measurement

__all__ = ["baseline_spec", "fit_settings", "run_metrics", "set_training_threads"]


def baseline_spec(config: Config, data: TabularDataModule) -> NetworkSpec:
    """The configured baseline network, with inputs and outputs that fit `data`."""
    spec: NetworkSpec = kind_baseline_spec(
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
        precision=training.precision,
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
