"""`tabslim train`: train the configured baseline once, measure it, and log it to MLflow."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import mlflow
import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import MLPSpec, build
from lightning_modules.training import TrainConfig, fit
from search import tracking
from search.config import Config
from search.measure import measure
from search.pyfunc_model import log_model


def load_data(config: Config) -> TabularDataModule:
    """The configured table, checked, split and preprocessed (raises on bad input)."""
    data = config.data
    kwargs = {
        "task": None if data.task == "auto" else data.task,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "batch_size": config.training.batch_size,
        "seed": data.seed,
    }
    if data.path is not None:
        return TabularDataModule.from_path(data.path, data.target, **kwargs)
    assert data.dataset is not None, "config validation guarantees a source"
    return TabularDataModule.from_bundled(data.dataset, **kwargs)


def baseline_spec(config: Config, data: TabularDataModule) -> MLPSpec:
    model = config.model
    return MLPSpec(
        hidden=tuple(model.hidden),
        d_embedding=model.d_embedding,
        dropout=model.dropout,
        activation=model.activation,
        batch_norm=model.batch_norm,
        **data.network_inputs(),
    )


def train_config(config: Config, *, progress_bar: bool = False) -> TrainConfig:
    training = config.training
    return TrainConfig(
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


def data_params(config: Config, data: TabularDataModule) -> dict[str, object]:
    return {
        "data.source": data.source,
        "data.target": data.target,
        "data.task": data.task,
        "data.rows_train": len(data.train_frame),
        "data.rows_val": len(data.val_frame),
        "data.rows_test": len(data.test_frame),
    }


@dataclass
class TrainOutcome:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def run_train(config: Config, *, progress_bar: bool = True) -> TrainOutcome:
    """Train, measure and log the baseline. All input is checked before MLflow is touched."""
    data = load_data(config)
    spec = baseline_spec(config, data)
    set_training_threads(config)
    experiment_id = tracking.configure(config.tracking.uri, config.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        mlflow.set_tags({"tabslim.kind": "train", "tabslim.approach": "baseline"})
        params = tracking.flatten("", config.model_dump(exclude={"tracking"}))
        params.update(data_params(config, data))
        params["model.widths"] = "-".join(map(str, spec.hidden))
        mlflow.log_params(params)
        result = fit(
            build(spec, seed=config.training.seed),
            data,
            train_config(config, progress_bar=progress_bar),
        )
        started = time.perf_counter()
        measured = measure(
            result.network,
            batch_sizes=tuple(config.measure.batch_sizes),
            runtimes=tuple(config.measure.runtimes),
            threads=config.measure.threads,
        )
        metrics = {f"val_{k}": v for k, v in result.val_metrics.items()}
        metrics |= {f"test_{k}": v for k, v in result.test_metrics.items()}
        metrics |= measured.to_metrics()
        metrics |= {
            "train_seconds": result.seconds,
            "epochs": float(result.epochs),
            "best_epoch": float(result.best_epoch),
            "measure_seconds": time.perf_counter() - started,
        }
        mlflow.log_metrics(metrics)
        mlflow.log_dict(spec.to_dict(), "spec.json")
        info = log_model(spec, result.network, data.preprocessor, data.raw_sample())
    return TrainOutcome(run_id=run.info.run_id, model_uri=info.model_uri, metrics=metrics)
