"""`tabslim sensitivity`: the layer sensitivity scan of a study's baseline, logged to MLflow.

The study holds everything the scan needs: the validated config (data source, split, training
settings, tracking) and the folder where its baseline network was saved. The scan's run is
nested under the study's parent run, beside the trials.

Only studies are scanned, not arbitrary logged models: a model carries its network and
preprocessing but not its data split, and the drop is only meaningful on the validation rows the
network was chosen on.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import TabularNetwork
from pruning.choices import DEFAULT_EPOCHS
from pruning.criteria import check_criterion
from pruning.sensitivity import SensitivityResult, check_epochs, check_ratios, scan
from search import tracking
from search.cluster import RemoteNetworks, fetch, is_server
from search.config import Config, override, validate
from search.inputs import fit_settings, load_data
from search.serving import PREPROCESSOR_FILE, SPEC_FILE, WEIGHTS_FILE, load_network
from search.study import StudySettings, find_study, trials_root

KIND = "sensitivity"


@dataclass
class SensitivityOutcome:
    study: str
    result: SensitivityResult
    run_id: str
    parent_run_id: str | None
    tracking_uri: str
    seconds: float


def _study_config(study: optuna.Study, tracking_uri: str | None) -> tuple[Config, StudySettings]:
    name = study.study_name
    settings = StudySettings.read(study)
    if settings.config is None or settings.trials_dir is None:
        raise TabslimInputError(
            f"study '{name}' holds no tabslim config; it was not made by `tabslim search`"
        )
    config = validate(settings.config, f"stored with study '{name}'")
    if tracking_uri is not None:
        config = override(config, "from the command line", **{"tracking.uri": tracking_uri})
    return config, settings


def _baseline_dir(
    study: optuna.Study, settings: StudySettings, config: Config, parent: str | None
) -> Path:
    name = study.study_name
    number = settings.baseline_trial
    finished = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if number is None or number not in finished:
        raise TabslimInputError(
            f"the baseline of study '{name}' has not finished; run `tabslim search --study "
            f"{name}` until it has"
        )
    assert settings.trials_dir is not None, "checked by _study_config"
    directory = Path(settings.trials_dir) / f"trial-{number}"
    if is_server(config.tracking.uri) and parent is not None:
        # Networks travel through the server: this node's cache, filled from the study's run.
        remote = RemoteNetworks(config.tracking.uri, parent)
        directory = fetch(study, number, trials_root(config) / name, remote)
    for file in (SPEC_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE):
        if not (directory / file).is_file():
            raise TabslimInputError(
                f"the baseline network of study '{name}' is missing: {directory / file} "
                "does not exist"
            )
    return directory


def _metric_name(layer: int, ratio: float, epochs: int) -> str:
    return f"drop_layer{layer}_r{ratio:g}_e{epochs}"


def run_sensitivity(
    study_name: str,
    storage_url: str | None,
    *,
    ratios: Sequence[float],
    criterion: str,
    fine_tune_epochs: Sequence[int] = DEFAULT_EPOCHS,
    tracking_uri: str | None = None,
) -> SensitivityOutcome:
    """Scan the baseline of `study_name` and log the scan as a run nested under the study's.

    All input (ratios, criterion, study, baseline files, data, tracking store) is checked before
    the scan starts; nothing is written to MLflow unless the scan finishes.
    """
    ratios = check_ratios(ratios)
    epochs = check_epochs(fine_tune_epochs)
    check_criterion(criterion)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    study = find_study(study_name, storage_url)
    config, settings = _study_config(study, tracking_uri)
    experiment_id = tracking.configure(config.tracking.uri, config.tracking.experiment)
    client = MlflowClient()
    parent = tracking.find_study_run(client, experiment_id, study_name)
    directory = _baseline_dir(study, settings, config, parent)
    data = load_data(config)
    spec, network, _ = load_network(directory)
    assert isinstance(network, TabularNetwork)
    wanted = data.network_inputs()
    found = {"d_num": spec.d_num, "cat_cardinalities": spec.cat_cardinalities, "d_out": spec.d_out}
    if {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in wanted.items()} != found:
        raise TabslimInputError(
            f"the data of study '{study_name}' ({data.source}) no longer fit its baseline network "
            f"(network inputs {found}, data now {wanted})"
        )
    started = time.time()
    result = scan(
        network,
        data,
        ratios=ratios,
        criterion=criterion,
        fine_tune_epochs=epochs,
        fit_settings=fit_settings(config),
        seed=config.training.seed,
    )
    seconds = time.time() - started
    run_id = _log(client, experiment_id, parent, study_name, result, settings, seconds, started)
    return SensitivityOutcome(
        study=study_name,
        result=result,
        run_id=run_id,
        parent_run_id=parent,
        tracking_uri=config.tracking.uri,
        seconds=seconds,
    )


def _scan_params(result: SensitivityResult, settings: StudySettings) -> dict[str, str]:
    """What the scan ran with, as MLflow parameters."""
    widths = result.table.groupby("layer")["width"].first()
    return {
        "ratios": ",".join(f"{r:g}" for r in result.ratios),
        "criterion": result.criterion,
        "fine_tune_epochs": ",".join(map(str, result.epochs)),
        "metric": f"val_{result.metric}",
        "baseline_trial": str(settings.baseline_trial),
        "widths": "-".join(str(int(w)) for w in widths),
        "layer_order": ",".join(map(str, result.order)),
    }


def _scan_metrics(result: SensitivityResult, seconds: float) -> dict[str, float]:
    """Each cell's drop, each group's mean drop, the baseline's metric and the scan's time."""
    table = result.table
    metrics = {
        _metric_name(int(row.layer), float(row.ratio), int(row.epochs)): float(row.drop)
        for row in table.itertuples()
    }
    for layer, mean in table.groupby("layer")["drop"].mean().items():
        metrics[f"mean_drop_layer{layer}"] = float(mean)
    metrics[f"baseline_val_{result.metric}"] = float(table["baseline_metric"].iloc[0])
    metrics["scan_seconds"] = seconds
    return metrics


def _log(
    client: MlflowClient,
    experiment_id: str,
    parent: str | None,
    study_name: str,
    result: SensitivityResult,
    settings: StudySettings,
    seconds: float,
    started: float,
) -> str:
    order = ",".join(map(str, result.order))
    tags = {"tabslim.kind": KIND, "tabslim.study": study_name, "layer_order": order}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(
        experiment_id,
        run_name=f"sensitivity-{result.criterion}",
        start_time=int(started * 1000),
        tags=tags,
    )
    run_id = run.info.run_id
    try:
        table = result.table
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in _scan_metrics(result, seconds).items()],
            params=[Param(k, v) for k, v in _scan_params(result, settings).items()],
            tags=[RunTag("tabslim.criterion", result.criterion)],
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            table.to_csv(folder / "sensitivity.csv", index=False)
            result.heatmap_png(
                folder / "sensitivity.png",
                title=f"{study_name}: layer sensitivity ({result.criterion})",
            )
            client.log_artifact(run_id, str(folder / "sensitivity.csv"))
            client.log_artifact(run_id, str(folder / "sensitivity.png"))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
