"""`tabslim train`: train the configured baseline once, measure it, and log it to MLflow."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import mlflow
from mlflow.entities import DatasetInput
from mlflow.tracking import MlflowClient

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import no_better_than_constant, serving_preprocessor
from lightning_modules.networks import NetworkSpec, build
from lightning_modules.training import fit
from search import tracking
from search.cluster import without_passwords
from search.config import Config
from search.inputs import (
    baseline_spec,
    data_params,
    fit_settings,
    load_data,
    print_notes,
    run_metrics,
    set_training_threads,
)
from search.measure import Phases, ServedRows, measure
from search.serving import build_profile, log_model, reference_sample


def _note_if_no_better_than_constant(data: TabularDataModule, val: dict[str, float]) -> None:
    """A note on stderr when the network learned nothing a constant guess does not know."""
    metric = data.task.metric
    guess = no_better_than_constant(data, val[metric])
    if guess is not None:
        print(
            f"tabslim: note: the trained network's validation {metric} {val[metric]:.4g} is no "
            f"better than {guess}; check training.lr and training.max_epochs, and whether the "
            "columns predict the target",
            file=sys.stderr,
        )


@dataclass
class TrainOutcome:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def _log_inputs(
    config: Config, data: TabularDataModule, spec: NetworkSpec, dataset: DatasetInput, run_id: str
) -> None:
    """The run's tags, its parameters (the config without passwords, the data, the widths) and
    its dataset, on the active run `run_id`."""
    mlflow.set_tags({"tabslim.kind": "train", "tabslim.approach": "baseline"})
    params = tracking.flatten("", without_passwords(config.model_dump(exclude={"tracking"})))
    params.update(data_params(data))
    params["model.widths"] = "-".join(map(str, spec.group_sizes()))
    mlflow.log_params(params)
    tracking.log_dataset(MlflowClient(), run_id, dataset)


def run_train(config: Config, *, progress_bar: bool = True) -> TrainOutcome:
    """Train, measure and log the baseline. All input is checked before MLflow is touched.

    The run's `seconds.<phase>` metrics say where the time went (read, preprocess, fit,
    profile, log, measure).
    """
    phases = Phases()
    data = load_data(config, phases)
    spec = baseline_spec(config, data)
    with phases("log"):
        dataset = tracking.training_dataset(data, config.data)
    set_training_threads(config)
    with phases("log"):
        experiment_id = tracking.configure(config.tracking.uri, config.tracking.experiment)
    print_notes(data)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        with phases("log"):
            _log_inputs(config, data, spec, dataset, run.info.run_id)
        with phases("fit"):
            result = fit(
                build(spec, seed=config.training.seed),
                data,
                fit_settings(config, progress_bar=progress_bar),
            )
        _note_if_no_better_than_constant(data, result.val_metrics)
        with phases("measure"):
            measured = measure(
                result.network,
                batch_sizes=tuple(config.measure.batch_sizes),
                runtimes=tuple(config.measure.runtimes),
                threads=config.measure.threads,
                # ONNX Runtime's latency is the served graph's, as the logged model serves.
                served=ServedRows.from_data(data),
                # One model: the bare network's graph beside it shows what serving adds.
                time_network=True,
            )
        with phases("profile"):
            profile = build_profile(data, result.network, seed=config.data.seed)
        with phases("log"):
            mlflow.log_dict(spec.to_dict(), "spec.json")
            info = log_model(
                spec,
                result.network,
                serving_preprocessor(result.network, data),
                data.example_rows(),
                profile=profile,
                reference_rows=reference_sample(data, config.tracking.reference_rows),
            )
        metrics = run_metrics(
            result.val_metrics,
            result.test_metrics,
            measured,
            train_seconds=result.seconds,
            epochs=result.epochs,
            best_epoch=result.best_epoch,
            measure_seconds=phases.seconds["measure"],
        )
        metrics |= phases.metrics()
        mlflow.log_metrics(metrics)
    return TrainOutcome(run_id=run.info.run_id, model_uri=info.model_uri, metrics=metrics)
