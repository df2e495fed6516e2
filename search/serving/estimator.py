"""What a logged model needs to estimate its own metric on rows whose labels have not come yet.

Fit on the validation split when the model is logged, stored with its reference profile, and
applied by `tabslim drift` (`search.monitor.estimated`). Both methods assume that only the
inputs moved, not how the target depends on them (covariate shift): concept drift is what they
cannot see, and what the realized metric on labelled rows is for.

- Classification, CBPE (confidence-based performance estimation, as in NannyML): per class a
  one-vs-rest isotonic map from the predicted probability to how often that class is the label,
  rows renormalised. The expected accuracy of new rows is the mean calibrated probability of
  the predicted class. The maps are stored as their breakpoints (plain JSON, applied with
  `np.interp`), so that applying them needs no pickled scikit-learn object.
- Regression, DLE (direct loss estimation): a small gradient-boosted model, fit on validation,
  that predicts each row's squared error from its raw features and the model's prediction. The
  estimated RMSE is the root of the mean predicted squared error. The loss model is stored
  beside the profile (`LOSS_MODEL_FILE`) without pickle (`search.serving.loss_model`).
- Anomaly: no estimate. PR AUC depends on how many rows are anomalies, which the scores alone
  do not give.

Each estimate comes with a 95% interval for the metric the rows would realize. It covers the
noise of a finite batch (given the calibrated probabilities, or the predicted losses) and the
estimator's own error, measured by cross-fitting on validation (`_FOLDS` folds: fit on the
others, judged on the held-out one). It does not cover concept drift.

scikit-learn is imported inside the fitting functions: `tabslim --help` must not pay for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lightning_modules.task import Task
from search.serving.loss_model import LossModel, LossPredictor

__all__ = [
    "ANOMALY_NOT_ESTIMATED",
    "ESTIMATOR_ROWS",
    "calibrate",
    "estimate_accuracy",
    "estimate_rmse",
    "fit_estimator",
    "loss_features",
]

# Categorical missing values are counted as this category, as the preprocessing encodes them.
# Here rather than in the profile, so that applying an estimator imports no torch.
MISSING = "<missing>"
# Validation rows the estimator is fit on at most: the calibration and the loss model settle
# long before this, and the cost no longer grows with the table.
ESTIMATOR_ROWS = 20_000
# Below this many validation rows neither the calibration nor the loss model can be judged.
_MIN_ROWS = 20
_FOLDS = 5
# Two-sided 95% normal quantile.
_Z = 1.959963984540054
ANOMALY_NOT_ESTIMATED = (
    "anomaly: performance is not estimated without labels (PR AUC needs the anomaly rate, "
    "which the scores alone do not give)"
)


def _folds(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Seeded folds of `n` rows, at least 10 rows each."""
    k = max(2, min(_FOLDS, n // 10))
    return [np.sort(f) for f in np.array_split(rng.permutation(n), k)]


def _spread(gaps: list[float]) -> float:
    """An estimator's own error, from its cross-fitted gaps (estimate minus realized) per fold.

    The mean gap is its bias; the spread of the gaps over the folds, divided by their number, is
    the uncertainty of a map fit on all validation rows. Both count, the bias in full.
    """
    d = np.asarray(gaps, dtype=float)
    variance = float(d.var(ddof=1)) / len(d) if len(d) > 1 else 0.0
    return math.sqrt(float(d.mean()) ** 2 + variance)


# --- CBPE ---------------------------------------------------------------------------------


def _fit_calibration(probabilities: np.ndarray, labels: np.ndarray) -> list[dict[str, list]]:
    """Per class, the isotonic map's breakpoints from its probability to its frequency.

    Args:
        probabilities: (N, classes), as the served model gives them.
        labels: (N,) class indices.
    """
    from sklearn.isotonic import IsotonicRegression

    maps = []
    for k in range(probabilities.shape[1]):
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            probabilities[:, k], (labels == k).astype(float)
        )
        maps.append({"x": fitted.X_thresholds_.tolist(), "y": fitted.y_thresholds_.tolist()})
    return maps


def calibrate(maps: list[dict[str, list]], probabilities: np.ndarray) -> np.ndarray:
    """(N, classes) calibrated probabilities; `np.interp` clips as the isotonic fit did."""
    calibrated = np.column_stack(
        [np.interp(probabilities[:, k], m["x"], m["y"]) for k, m in enumerate(maps)]
    )
    total = calibrated.sum(axis=1, keepdims=True)
    # A row every map sends to 0 keeps its own probabilities: nothing better is known of it.
    return np.where(total > 0, calibrated / np.where(total > 0, total, 1.0), probabilities)


def _right_chance(maps: list[dict[str, list]], probabilities: np.ndarray) -> np.ndarray:
    """(N,) the calibrated chance that each row's predicted (most probable) class is right."""
    predicted = probabilities.argmax(axis=1)
    return calibrate(maps, probabilities)[np.arange(len(probabilities)), predicted]


def _fit_cbpe(
    probabilities: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    gaps = []
    for held in _folds(len(labels), rng):
        rest = np.setdiff1d(np.arange(len(labels)), held)
        maps = _fit_calibration(probabilities[rest], labels[rest])
        gaps.append(float(_right_chance(maps, probabilities[held]).mean() - correct[held].mean()))
    return {
        "method": "CBPE",
        "metric": "accuracy",
        "calibration": _fit_calibration(probabilities, labels),
        "calibration_sd": _spread(gaps),
        "rows": len(labels),
    }


def estimate_accuracy(
    estimator: dict[str, Any], probabilities: np.ndarray
) -> tuple[float, float, float]:
    """The expected accuracy of rows with these (N, classes) probabilities, and its 95% interval.

    Given calibrated chances p_i, the accuracy the rows realize is a Poisson-binomial mean with
    standard deviation sqrt(sum p_i (1 - p_i)) / N; the calibration's error measured on
    validation adds to it.
    """
    chance = _right_chance(estimator["calibration"], probabilities)
    value = float(chance.mean())
    sampling = math.sqrt(float(np.sum(chance * (1 - chance)))) / len(chance)
    half = _Z * math.hypot(sampling, float(estimator["calibration_sd"]))
    return value, max(value - half, 0.0), min(value + half, 1.0)


# --- DLE ----------------------------------------------------------------------------------


def loss_features(
    frame: pd.DataFrame, columns: dict[str, Any], predicted: np.ndarray
) -> np.ndarray:
    """(N, columns + 1) what the loss model reads: each profiled column, then the prediction.

    A numeric column enters as its value (NaN when missing), a categorical one as its
    category's share of the training rows (0 for one never seen), which keeps the trees numeric.
    """
    parts = []
    for name, spec in columns.items():
        if spec["type"] == "numeric":
            parts.append(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float))
        else:
            labels = frame[name].astype("string").fillna(MISSING).astype(object)
            shares = labels.map(spec["frequencies"]).astype(float).fillna(0.0)
            parts.append(shares.to_numpy(dtype=float))
    parts.append(np.asarray(predicted, dtype=float))
    return np.column_stack(parts)


def _fit_loss_model(x: np.ndarray, loss: np.ndarray, seed: int) -> LossModel:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    # Poisson loss: its log link keeps predicted losses positive, and it takes the long tail of
    # squared errors. Scaled to mean 1, so that the learning rate means the same on any target.
    scale = float(loss.mean()) or 1.0
    regressor = HistGradientBoostingRegressor(
        loss="poisson",
        max_iter=50,
        max_leaf_nodes=8,
        min_samples_leaf=20,
        learning_rate=0.1,
        early_stopping=False,
        random_state=seed,
    )
    # One OpenMP thread: beside torch's threads on a busy 2-core machine, its default thread
    # pool made a fit on 200 rows take 9 s instead of 25 ms.
    with threadpool_limits(limits=1, user_api="openmp"):
        return LossModel(regressor.fit(x, loss / scale), scale)


def _fit_dle(
    x: np.ndarray, loss: np.ndarray, columns: dict[str, Any], rng: np.random.Generator, seed: int
) -> tuple[dict[str, Any], LossModel]:
    predicted = np.empty_like(loss)
    gaps = []
    for held in _folds(len(loss), rng):
        rest = np.setdiff1d(np.arange(len(loss)), held)
        predicted[held] = _fit_loss_model(x[rest], loss[rest], seed).predict(x[held])
        # Relative: under a shift the mean squared error moves, and its error with it.
        gaps.append(float(predicted[held].mean() / max(loss[held].mean(), 1e-300) - 1))
    # How far a row's squared error strays from its prediction, per squared prediction (2 for
    # Gaussian residuals): the noise of a batch's mean squared error given its predicted losses.
    dispersion = float(np.mean((loss - predicted) ** 2) / max(np.mean(predicted**2), 1e-300))
    estimator = {
        "method": "DLE",
        "metric": "rmse",
        "loss_model": None,  # the file's name, once written beside the profile
        # What the loss model reads, as it read it: a retrain may replace the profile's columns.
        "columns": {
            name: {"type": "numeric"}
            if spec["type"] == "numeric"
            else {"type": "categorical", "frequencies": spec["frequencies"]}
            for name, spec in columns.items()
        },
        "dispersion": dispersion,
        "relative_sd": _spread(gaps),
        "rows": len(loss),
    }
    return estimator, _fit_loss_model(x, loss, seed)


def estimate_rmse(
    estimator: dict[str, Any], model: LossPredictor, x: np.ndarray
) -> tuple[float, float, float]:
    """The expected RMSE of rows with these loss features (`loss_features`), and its 95% interval.

    The mean squared error the rows realize varies around the mean predicted loss by
    sqrt(dispersion * sum l_i^2) / N; the loss model's relative error measured on validation
    adds to it. The interval is found on the mean squared error, then rooted.
    """
    losses = model.predict(x)
    mse = float(losses.mean())
    sampling = math.sqrt(float(estimator["dispersion"]) * float(np.sum(losses**2))) / len(losses)
    half = _Z * math.hypot(sampling, float(estimator["relative_sd"]) * mse)
    return math.sqrt(mse), math.sqrt(max(mse - half, 0.0)), math.sqrt(mse + half)


# --- fitting at log time ------------------------------------------------------------------


def fit_estimator(
    task: Task,
    frame: pd.DataFrame,
    actual: pd.Series,
    decoded: dict[str, np.ndarray],
    *,
    classes: list[Any],
    columns: dict[str, Any],
    seed: int = 0,
) -> tuple[dict[str, Any], LossModel | None]:
    """The estimator of a model from its validation rows, and a regression's loss model.

    Args:
        frame: the validation rows, raw.
        actual: their target values.
        decoded: the model's decoded outputs on them (`Preprocessor.decode`).
        columns: the profile's columns (`build_profile`), which the loss model reads.
    """
    if task.is_anomaly:
        return {"method": None, "reason": ANOMALY_NOT_ESTIMATED}, None
    rng = np.random.default_rng(seed)
    picked = np.arange(len(frame))
    if len(frame) > ESTIMATOR_ROWS:
        picked = np.sort(rng.choice(len(frame), ESTIMATOR_ROWS, replace=False))
    if len(picked) < _MIN_ROWS:
        reason = (
            f"{len(picked)} validation rows are too few to fit an estimator (it needs "
            f"{_MIN_ROWS}); train on more rows to get one"
        )
        return {"method": None, "reason": reason}, None
    if task.is_regression:
        predicted = np.asarray(decoded["prediction"], dtype=float)[picked]
        loss = (predicted - actual.to_numpy(dtype=float)[picked]) ** 2
        x = loss_features(frame.iloc[picked], columns, predicted)
        return _fit_dle(x, loss, columns, rng, seed)
    lookup = {c: i for i, c in enumerate(classes)}
    labels = actual.iloc[picked].map(lookup).fillna(-1).to_numpy(dtype=int)
    probabilities = np.asarray(decoded["probabilities"], dtype=float)[picked]
    return _fit_cbpe(probabilities, labels, rng), None
