"""The metric estimated without labels: CBPE for classifiers, DLE for regressors, none for
anomaly detectors; on toy draws whose truth is known, then through `tabslim drift`."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lightning_modules.datasets import drift_batch, synthetic
from lightning_modules.task import Task
from search.commands import main
from search.monitor import LOGGED_BEFORE, estimate_note, estimated_metric
from search.serving import (
    ANOMALY_NOT_ESTIMATED,
    LOSS_MODEL_FILE,
    estimate_accuracy,
    estimate_rmse,
    fit_estimator,
    load_loss_model,
    loss_features,
)

CLASSES = [0, 1, 2]


def _draw(n: int, concentration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) true class probabilities and labels drawn from them."""
    truth = rng.dirichlet(np.full(3, concentration), size=n)
    labels = (rng.random((n, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    return truth, labels


def _sharpened(truth: np.ndarray, temperature: float) -> np.ndarray:
    """An overconfident model's probabilities: the true ones raised to 1 / temperature."""
    sharp = truth ** (1 / temperature)
    return sharp / sharp.sum(axis=1, keepdims=True)


def _cbpe(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    estimator, loss_model = fit_estimator(
        Task.MULTICLASS,
        pd.DataFrame(index=range(len(labels))),
        pd.Series(labels),
        {"probabilities": probabilities},
        classes=CLASSES,
        columns={},
    )
    assert estimator["method"] == "CBPE" and loss_model is None
    return estimator


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def test_a_calibrated_models_estimate_is_its_mean_confidence_and_holds_the_realized_accuracy() -> (
    None
):
    rng = np.random.default_rng(0)
    estimator = _cbpe(*_draw(2000, 1.0, rng))
    truth, labels = _draw(1000, 1.0, rng)
    value, low, high = estimate_accuracy(estimator, truth)
    assert value == pytest.approx(truth.max(axis=1).mean(), abs=0.02)
    assert low <= _accuracy(truth, labels) <= high
    # Sampling noise of 1,000 rows and the calibration's own error: a few points, not more.
    assert 0.02 < high - low < 0.12


def test_an_overconfident_model_is_calibrated_on_validation_before_it_is_trusted() -> None:
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth, labels = _draw(1500, 1.0, rng)
        estimator = _cbpe(_sharpened(truth, 0.3), labels)
        # New rows that are harder than validation's: a covariate shift CBPE can follow.
        fresh, fresh_labels = _draw(800, 3.0, rng)
        served = _sharpened(fresh, 0.3)
        realized = _accuracy(served, fresh_labels)
        # Taken at its word, the model promises far more than it delivers.
        assert served.max(axis=1).mean() > realized + 0.1
        value, low, high = estimate_accuracy(estimator, served)
        assert abs(value - realized) < 0.06
        covered += low <= realized <= high
    # A 95% interval, on 20 draws: at most two may miss.
    assert covered >= 18


def _noisy_rows(x: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose noise grows with x; the model predicts the mean, 2x, exactly."""
    frame = pd.DataFrame({"x": x, "shop": np.where(x > 0.5, "late", "early")})
    frame.loc[rng.random(len(x)) < 0.1, "x"] = np.nan  # the loss model takes gaps
    return frame, 2 * x + (0.1 + 2 * x) * rng.normal(size=len(x))


def test_the_estimated_rmse_rises_with_the_noise_of_the_rows_and_tracks_the_truth(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    columns = {
        "x": {"type": "numeric"},
        "shop": {"type": "categorical", "frequencies": {"early": 0.5, "late": 0.5}},
    }
    x = rng.random(2000)
    frame, y = _noisy_rows(x, rng)
    estimator, model = fit_estimator(
        Task.REGRESSION, frame, pd.Series(y), {"prediction": 2 * x}, classes=[], columns=columns
    )
    assert estimator["method"] == "DLE" and model is not None
    model.save(tmp_path / LOSS_MODEL_FILE)
    model = load_loss_model(tmp_path / LOSS_MODEL_FILE)
    found = {}
    for name, (start, stop) in {"quiet": (0.0, 0.3), "noisy": (0.7, 1.0)}.items():
        x = rng.uniform(start, stop, 1000)
        batch, y = _noisy_rows(x, rng)
        value, low, high = estimate_rmse(
            estimator, model, loss_features(batch, estimator["columns"], 2 * x)
        )
        true = float(np.sqrt(np.mean((2 * x - y) ** 2)))
        assert low <= true <= high, (name, low, true, high)
        assert value == pytest.approx(true, rel=0.15)
        found[name] = value
    assert found["noisy"] > 3 * found["quiet"]


def test_too_few_validation_rows_and_anomaly_get_no_estimator_and_say_why() -> None:
    few, _ = fit_estimator(
        Task.BINARY,
        pd.DataFrame(index=range(10)),
        pd.Series([0, 1] * 5),
        {"probabilities": np.full((10, 2), 0.5)},
        classes=[0, 1],
        columns={},
    )
    assert few["method"] is None and "too few" in few["reason"]
    anomaly, _ = fit_estimator(
        Task.ANOMALY, pd.DataFrame(), pd.Series(dtype=float), {}, classes=[], columns={}
    )
    assert anomaly == {"method": None, "reason": ANOMALY_NOT_ESTIMATED}
    old_profile = {"target": "y", "validation": {"value": 0.9}}
    rows = pd.DataFrame({"a": [1.0, 2.0]})
    assert estimated_metric(old_profile, Path("."), rows, pd.DataFrame()) is None
    assert estimate_note(old_profile, rows) == LOGGED_BEFORE
    # Every row labelled: nothing to estimate, and nothing to explain.
    assert estimate_note(old_profile, rows.assign(y=[0, 1])) is None


# --- end to end ---------------------------------------------------------------------------


def _train(root: Path, frame: pd.DataFrame, target: str, *extra: str) -> tuple[str, str]:
    """`tabslim train` on `frame`; its model URI and the tracking URI."""
    path = root / f"{target}-train.csv"
    frame.to_csv(path, index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["train", "--data", str(path), "--target", target, "--tracking-uri", uri,
             "--max-epochs", "5", "--quiet", *extra]
        )  # fmt: skip
    assert code == 0
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)
    return model, uri


def _drift(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, float]]:
    """`tabslim drift`'s output and the metrics of its run."""
    out, client, run_id = _drift_run(args, capsys)
    return out, client.get_run(run_id).data.metrics


def _drift_run(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[str, MlflowClient, str]:
    capsys.readouterr()
    assert main(["drift", *args]) == 0
    out = capsys.readouterr().out
    (run_id,) = re.findall(r"MLflow run (\w+)", out)
    return out, MlflowClient(args[args.index("--tracking-uri") + 1]), run_id


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("estimated")
    model, uri = _train(root, drift_batch("none", seed=0, n_rows=800), "churned")
    batch = drift_batch("covariate", seed=1, n_rows=600)
    features, labels = root / "features.csv", root / "labels.csv"
    batch.drop(columns=["churned"]).to_csv(features, index=False)
    batch[["churned"]].to_csv(labels, index=False)
    return {"model": model, "uri": uri, "features": str(features), "labels": str(labels)}


def test_drift_estimates_a_classifiers_accuracy_on_rows_without_labels(
    churn: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", churn["model"], "--tracking-uri", churn["uri"]]
    out, metrics = _drift([*base, "--data", churn["features"]], capsys)
    assert "estimated accuracy (CBPE) on 600 unlabelled rows: " in out
    assert "realized accuracy" not in out
    low, value, high = (metrics[f"estimated_accuracy{s}"] for s in ("_ci_low", "", "_ci_high"))
    assert 0 <= low <= value <= high <= 1
    assert 0 <= metrics["estimated_rows_outside_range"] <= 1
    # With the labels beside them: the estimate, made from the features alone, and the truth.
    out, metrics = _drift([*base, "--data", churn["features"], "--labels", churn["labels"]], capsys)
    assert "estimated accuracy (CBPE) on 600 unlabelled rows: " in out
    assert "realized accuracy on these rows: " in out
    assert metrics["estimated_accuracy"] == value
    assert abs(metrics["realized_accuracy"] - value) < 0.1


def test_the_reports_files_hold_the_estimate(
    churn: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", churn["model"], "--tracking-uri", churn["uri"], "--data", churn["features"]]
    _, client, run_id = _drift_run(args, capsys)
    stored = json.loads(Path(client.download_artifacts(run_id, "drift_report.json")).read_text())
    assert stored["estimated"]["method"] == "CBPE" and stored["estimated"]["rows"] == 600
    page = Path(client.download_artifacts(run_id, "drift_report.html")).read_text()
    assert "<h2>Performance</h2>" in page and "estimated (CBPE) on 600 rows" in page


def _one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_labels_of_another_length_are_one_line(
    churn: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.csv"
    pd.read_csv(churn["labels"]).head(10).to_csv(short, index=False)
    args = ["drift", "--model", churn["model"], "--tracking-uri", churn["uri"],
            "--data", churn["features"], "--labels"]  # fmt: skip
    assert "short.csv has 10 rows but" in _one_line([*args, str(short)], capsys)
    assert "none.csv" in _one_line([*args, str(tmp_path / "none.csv")], capsys)


def test_drift_estimates_a_regressors_rmse_and_not_an_anomaly_detectors_pr_auc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = synthetic("regression", seed=0, n_rows=500)
    model, uri = _train(tmp_path, table, "target")
    files = Path(mlflow.artifacts.download_artifacts(model)) / "artifacts" / "network"
    profile = json.loads((files / "profile.json").read_text())
    assert (files / profile["estimator"]["loss_model"]).is_file()
    rows = tmp_path / "rows.csv"
    synthetic("regression", seed=1, n_rows=300).drop(columns=["target"]).to_csv(rows, index=False)
    out, metrics = _drift(["--model", model, "--tracking-uri", uri, "--data", str(rows)], capsys)
    assert "estimated rmse (DLE) on 300 unlabelled rows: " in out
    assert metrics["estimated_rmse_ci_low"] <= metrics["estimated_rmse"]

    rng = np.random.default_rng(0)
    fraud = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    fraud["label"] = np.where(np.arange(400) % 20 == 0, "bad", "ok")
    model, uri = _train(tmp_path, fraud, "label", "--task", "anomaly")
    fraud.drop(columns=["label"]).head(100).to_csv(rows, index=False)
    out, metrics = _drift(["--model", model, "--tracking-uri", uri, "--data", str(rows)], capsys)
    assert ANOMALY_NOT_ESTIMATED in out
    assert not any(name.startswith("estimated") for name in metrics)


def test_rows_beyond_the_training_range_are_counted_and_the_estimate_says_so() -> None:
    from search.monitor.estimated import Estimated, outside_range

    profile = {
        "columns": {
            "temperature": {"type": "numeric", "bin_edges": [10.0, 20.0, 30.0]},
            "load": {"type": "numeric", "bin_edges": [0.0, 1.0]},
            "plan": {"type": "categorical", "frequencies": {"a": 1.0}},
        }
    }
    frame = pd.DataFrame(
        {
            "temperature": [5.0, 15.0, 35.0, 25.0, np.nan, 12.0, 2.0, 18.0],
            "load": [0.5, 0.5, 0.5, 1.5, 0.5, 0.5, 0.5, 0.5],
            "plan": ["z"] * 8,  # unseen categories are the drift report's, not this count's
        }
    )
    share, column = outside_range(profile, frame)
    assert share == 4 / 8 and column == "temperature"
    inside = frame.assign(temperature=15.0, load=0.5)
    assert outside_range(profile, inside) == (0.0, None)
    line = Estimated("rmse", 1.0, 0.9, 1.1, 0.8, "DLE", 8, share, column).describe()
    assert "50% of them lie beyond the training range (most in temperature)" in line
    assert "beyond" not in Estimated("rmse", 1.0, 0.9, 1.1, 0.8, "DLE", 8, 0.01, "t").describe()
