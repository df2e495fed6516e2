"""The reference profile stored with every logged model: what its training data looked like.

Drift checks compare new rows with this profile, so they never need the old training file. It
is plain JSON (`profile.json`, beside the spec and weights), and holds per raw input column its
type and missing rate; for numeric columns decile bin edges and counts and a seeded sample of
training values; for categorical ones the category frequencies (what the preprocessing would
treat as unseen is every category not listed). Also the target's distribution, the model's
predictions and metric on the validation split, and a permutation importance per column on
validation, so that drift in a column the model ignores weighs little. And the estimator fit
on validation (`search.serving.estimator`) that estimates the model's metric on rows whose
labels have not come yet; a regression's loss model is stored beside it (`LOSS_MODEL_FILE`).

Only the validation metric and predictions read every row they describe; the distributions
and the importance read seeded samples (`PROFILE_ROWS`, `IMPORTANCE_ROWS`), so that a profile
costs seconds at a million rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.metrics import metric_of_rows, row_scores
from lightning_modules.networks import infer
from lightning_modules.task import Task
from search.serving.estimator import MISSING, fit_estimator
from search.serving.loss_model import LossModel
from search.serving.served_model import LOSS_MODEL_FILE, PROFILE_FILE

__all__ = [
    "ACCEPTED_FILE",
    "ACCEPTED_TAG",
    "MISSING",
    "PROFILE_FILE",
    "accepted_profile",
    "bin_counts",
    "build_profile",
    "read_profile",
    "write_profile",
]

# 2: with an estimator (a profile without one reads as a model logged before it).
PROFILE_VERSION = 2
_BINS = 10
# Training values kept per numeric column for the two-sample tests: enough for a KS test to see
# a shift of a tenth of a standard deviation, small enough for a JSON file.
_SAMPLE = 2000
# Training rows the column distributions are read from: PSI compares bin shares, which this many
# rows give to a fraction of a percent, and scanning 700k rows per column took 2 s at 1M rows.
PROFILE_ROWS = 100_000
# Validation rows the permutation importance shuffles: a column that moves the metric by a
# point still shows at this size, and the cost no longer grows with the table.
IMPORTANCE_ROWS = 5000
# Shuffles per column whose losses the importance averages.
_SHUFFLES = 3
# A champion's version tag: the retrain run whose rows it was kept on (see `accepted_profile`),
# and that run's artifact holding the profile later retrains measure drift from.
ACCEPTED_TAG = "tabslim.accepted_rows_run"
ACCEPTED_FILE = "accepted_profile.json"
# What the rows a champion was kept on replace in its profile; the validation metric (the
# tolerance's reference) and the importances stay the champion's own.
_ACCEPTED_KEYS = ("columns", "target_distribution", "prediction_distribution", "training_rows")


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts of `values` in the bins between `edges`; values beyond them go to the end bins."""
    interior = np.asarray(edges[1:-1], dtype=float)
    index = np.searchsorted(interior, values, side="right")
    return np.bincount(index, minlength=max(len(edges) - 1, 1))


def _numeric(values: pd.Series, rng: np.random.Generator) -> dict[str, Any]:
    x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, _BINS + 1))).tolist() if len(x) else []
    sample = rng.choice(x, size=min(_SAMPLE, len(x)), replace=False) if len(x) else x
    return {
        "type": "numeric",
        # The exact training type (int64, float64, bool): the data-quality check holds new rows
        # to it (`search.monitor.quality`). Profiles logged before it have no such key.
        "dtype": str(values.dtype),
        "missing_rate": float(values.isna().mean()),
        "bin_edges": edges,
        "bin_counts": bin_counts(x, edges).tolist() if edges else [],
        "sample": sorted(sample.tolist()),
        "mean": float(x.mean()) if len(x) else 0.0,
        "std": float(x.std()) if len(x) else 0.0,
    }


def _categorical(values: pd.Series) -> dict[str, Any]:
    labels = values.astype("string").fillna(MISSING)
    frequencies = labels.value_counts(normalize=True)
    return {
        "type": "categorical",
        "dtype": str(values.dtype),
        "missing_rate": float(values.isna().mean()),
        "frequencies": {str(k): float(v) for k, v in frequencies.items()},
    }


def _decoded(
    network: nn.Module, data: TabularDataModule, frame: pd.DataFrame, graph: Path | None = None
) -> dict[str, np.ndarray]:
    """The model's decoded outputs: predictions in the target's terms, class probabilities,
    anomaly scores; from the ONNX `graph` that serves, where one is given (an INT8 copy's
    outputs are not its fp32 source's)."""
    arrays = data.preprocessor.transform(frame)
    if graph is None:
        output = infer(network, arrays["x_num"], arrays["x_cat"])
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        feeds = {i.name: arrays[i.name].numpy() for i in session.get_inputs()}
        output = torch.from_numpy(np.asarray(session.run(None, feeds)[0], dtype=np.float32))
    return data.preprocessor.decode(output, arrays["x_num"])


def _metric(task: Task, predicted: np.ndarray, actual: pd.Series, positive: Any = None) -> float:
    rows = row_scores(task, predicted, actual, positive)
    return float(metric_of_rows(task.metric, rows))


def _importance(
    network: nn.Module, data: TabularDataModule, rng: np.random.Generator
) -> dict[str, float]:
    """How much the validation metric worsens when one column's values are shuffled.

    On a seeded sample of at most `IMPORTANCE_ROWS` validation rows: a forward pass per column
    over a whole 150k-row validation split took 74 s of a 1M-row `tabslim train`. The sample is
    preprocessed once; shuffling a raw column is shuffling the input columns it encodes to (its
    value and missing indicator, or its category index), as the preprocessing is row by row.
    """
    frame, target = data.val_frame, data.target
    if len(frame) > IMPORTANCE_ROWS:
        frame = frame.iloc[np.sort(rng.choice(len(frame), IMPORTANCE_ROWS, replace=False))]
    prep, positive = data.preprocessor, _positive(data)
    inputs = prep.transform(frame)
    network = network.cpu().eval()

    def metric(x_num: torch.Tensor, x_cat: torch.Tensor) -> float:
        with torch.inference_mode():
            output = network(x_num, x_cat)
        decoded = prep.decode(output, x_num)
        predicted = decoded[data.task.scored_output]
        return _metric(data.task, np.asarray(predicted), frame[target], positive)

    base = metric(inputs["x_num"], inputs["x_cat"])
    higher = data.task.higher_is_better
    importance = {}
    for column in prep.feature_columns:
        worse = 0.0
        # Averaged over a few shuffles, as scikit-learn's permutation_importance does: one
        # shuffle of a few hundred rows moves a useless column's score by a point or two.
        for _ in range(_SHUFFLES):
            order = torch.from_numpy(rng.permutation(len(frame)))
            x_num, x_cat = inputs["x_num"].clone(), inputs["x_cat"].clone()
            if column in prep.categorical:
                index = list(prep.categorical).index(column)
                x_cat[:, index] = x_cat[order, index]
            else:
                encoded = [prep.numeric.index(column)]
                if column in prep.indicators:
                    encoded.append(len(prep.numeric) + prep.indicators.index(column))
                x_num[:, encoded] = x_num[order][:, encoded]
            value = metric(x_num, x_cat)
            worse += (base - value if higher else value - base) / _SHUFFLES
        importance[column] = max(float(worse), 0.0)
    return importance


def _json_label(label: Any) -> Any:
    return label.item() if hasattr(label, "item") else label


def _positive(data: TabularDataModule) -> Any:
    """Task anomaly's positive label (the second class); None for other tasks."""
    return data.preprocessor.classes[1] if data.task.is_anomaly else None


def build_profile(
    data: TabularDataModule,
    network: nn.Module,
    *,
    seed: int = 0,
    estimator: bool = True,
    graph: Path | None = None,
) -> dict[str, Any]:
    """The profile of `network` and the training split of `data`, JSON-ready but for a
    regression's loss model (`write_profile` stores it beside the JSON).

    The reference metric and the estimator are read on the certification rows, which chose
    nothing (`TabularDataModule.calibration_split`): on the validation rows that early-stopped
    and selected the model, CBPE estimated a census table 1.5 points above what it realized.

    Args:
        estimator: fit the estimator of the metric on unlabelled rows (`search.serving.estimator`).
        graph: the ONNX graph that serves, when its outputs differ from `network`'s (INT8).
    """
    rng = np.random.default_rng(seed)
    prep, train = data.preprocessor, data.train_frame
    if len(train) > PROFILE_ROWS:
        train = train.iloc[np.sort(rng.choice(len(train), PROFILE_ROWS, replace=False))]
    columns = {
        c: _numeric(train[c], rng) if c in prep.numeric else _categorical(train[c])
        for c in prep.feature_columns
    }
    split = data.calibration_split
    calibration = data.frame_of(split)
    decoded = _decoded(network, data, calibration, graph)
    predicted = np.asarray(decoded[data.task.scored_output])
    value = _metric(data.task, predicted, calibration[data.target], _positive(data))
    # In this order: each takes its sample from `rng` after the one before.
    target_distribution, prediction_distribution = _outcomes(data, train, predicted, rng)
    profile = {
        "version": PROFILE_VERSION,
        # Its name: the profile is JSON as stored, and its readers parse it (`Task(...)`).
        "task": data.task.value,
        "target": data.target,
        "training_rows": len(data.train_frame),
        "columns": columns,
        "target_distribution": target_distribution,
        "prediction_distribution": prediction_distribution,
        # Named "validation" for the profiles logged before; `split` says which rows.
        "validation": {
            "metric": data.task.metric,
            "value": value,
            "rows": len(calibration),
            "split": split,
        },
        "positive_class": _json_label(_positive(data)),
        "importance": _importance(network, data, rng),
        # Not features: identifiers, dates, the time column, those the user named; and why.
        "dropped_columns": dict(data.dropped),
        "time_column": data.time_column,
    }
    if estimator:
        profile["estimator"] = _estimator(data, calibration, decoded, columns, seed)
    return profile


def _estimator(
    data: TabularDataModule,
    calibration: pd.DataFrame,
    decoded: dict[str, np.ndarray],
    columns: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """The estimator fit on the calibration rows, with a regression's loss model held in memory
    until `write_profile` stores it as its own file."""
    fitted, loss_model = fit_estimator(
        data.task,
        calibration,
        calibration[data.target],
        decoded,
        classes=data.preprocessor.classes,
        columns=columns,
        seed=seed,
    )
    return fitted | ({"loss_model": loss_model} if loss_model else {})


def _outcomes(
    data: TabularDataModule, train: pd.DataFrame, predicted: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The distributions of the training target and of the model's scored output: numeric
    for a regression's values and anomaly scores, categorical for class labels."""
    target = train[data.target]
    targets = _numeric(target, rng) if data.task.is_regression else _categorical(target)
    if data.task.is_classification:
        return targets, _categorical(pd.Series(predicted))
    return targets, _numeric(pd.Series(predicted, dtype=float), rng)


def write_profile(directory: Path, profile: dict[str, Any]) -> None:
    """`profile.json` in a model's network folder, and beside it a regression's loss model."""
    estimator = profile.get("estimator") or {}
    loss_model = estimator.get("loss_model")
    if isinstance(loss_model, LossModel):
        loss_model.save(directory / LOSS_MODEL_FILE)
        profile = profile | {"estimator": estimator | {"loss_model": LOSS_MODEL_FILE}}
    (directory / PROFILE_FILE).write_text(json.dumps(profile))


def read_profile(directory: Path, model: str) -> dict[str, Any]:
    """The profile stored with a model, or a one-line error for a model logged without one."""
    path = directory / PROFILE_FILE
    if not path.is_file():
        raise TabslimInputError(
            f"model {model} has no reference profile (it was logged before tabslim stored "
            "one); train or search again to log a model with one"
        )
    return dict(json.loads(path.read_text()))


def accepted_profile(
    profile: dict[str, Any], data: TabularDataModule, network: nn.Module, run_id: str
) -> dict[str, Any]:
    """`profile` with its distributions taken from new rows the champion was kept on.

    A retrain that the drift score alone called for, in which no challenger beat the champion
    on the holdout, has shown the shift harmless to it: the labels show no fall, and training
    on the new rows bought nothing. Later retrains measure drift from those rows, so that one
    known shift does not call for a retrain on every batch that follows.
    """
    # The estimator stays the champion's own: it is fit on the champion's validation rows.
    fresh = build_profile(data, network, estimator=False)
    return profile | {k: fresh[k] for k in _ACCEPTED_KEYS} | {"accepted_from_run": run_id}
