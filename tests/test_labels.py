"""Labels compared by value: a target column that reads as floats (`1.0`, `0.0`, NaN, as a CSV
with empty cells does) is the model's classes `1` and `0`, in `drift`, `retrain` and what they
judge with; labels that match no class are refused with one line."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lightning_modules.datasets import drift_batch
from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task
from search.commands import main, run_drift, run_retrain
from search.monitor import coerce_labels, same_classes
from search.serving import OnnxPredictor


def _ints(kind: str, seed: int, n_rows: int) -> pd.DataFrame:
    batch = drift_batch(kind, seed=seed, n_rows=n_rows)
    return batch.assign(churned=(batch["churned"] == "yes").astype(int))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A model trained on integer labels 0/1, registered as champion."""
    root = tmp_path_factory.mktemp("labels")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _ints("none", 0, 1500).to_csv(root / "reference.csv", index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--data", str(root / "reference.csv"), "--target", "churned",
                     "--tracking-uri", uri, "--max-epochs", "8"]) == 0  # fmt: skip
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = mlflow.register_model(model, "ints")
    MlflowClient().set_registered_model_alias("ints", "champion", version.version)
    return {"uri": uri, "model": model, "root": str(root)}


def _with_gaps(frame: pd.DataFrame, every: int = 10) -> pd.DataFrame:
    """The target with an empty cell every `every` rows: read back, it is a float column."""
    frame = frame.copy()
    frame["churned"] = frame["churned"].astype(float)
    frame.loc[frame.index % every == 0, "churned"] = np.nan
    return frame


def test_float_labels_are_the_models_integer_classes() -> None:
    labels = pd.Series([1.0, 0.0, np.nan, 1.0])
    coerced = coerce_labels(labels, Task.BINARY, [0, 1], "labels.csv")
    assert coerced.tolist()[:2] == [1, 0] and coerced.tolist()[3] == 1
    assert coerced.isna().tolist() == [False, False, True, False]
    assert all(type(v) is int for v in coerced.dropna())
    # Text that reads as a number, and numbers for text classes, by value too.
    assert coerce_labels(pd.Series(["1", "0"]), Task.BINARY, [0, 1], "x").tolist() == [1, 0]
    assert coerce_labels(pd.Series([2.0, 1.0]), Task.MULTICLASS, ["1", "2"], "x").tolist() == [
        "2",
        "1",
    ]
    # A class the model never saw keeps the classes' type: 2.0 among [0, 1] is 2.
    assert coerce_labels(pd.Series([2.0, 1.0]), Task.MULTICLASS, [0, 1], "x").tolist() == [2, 1]


def test_labels_that_match_no_class_are_refused_in_one_line() -> None:
    with pytest.raises(TabslimInputError, match=r"no label in new\.csv is a class") as error:
        coerce_labels(pd.Series(["a", "b", None]), Task.BINARY, [0, 1], "new.csv")
    assert "np." not in str(error.value) and "\n" not in str(error.value)


def test_the_served_output_changes_only_with_the_classes() -> None:
    assert same_classes([0, 1], [np.int64(0), np.int64(1)]) is None
    changed = same_classes([0, 1], [0.0, 1.0])
    assert changed is not None and "proba_0.0" in changed
    assert "proba_2" in (same_classes([0, 1], [0, 1, 2]) or "")


def test_drift_realizes_float_labels_as_the_integer_classes(
    world: dict[str, str], tmp_path: Path
) -> None:
    rows = _ints("none", 3, 600)
    rows.drop(columns="churned").to_csv(tmp_path / "rows.csv", index=False)
    rows[["churned"]].to_csv(tmp_path / "ints.csv", index=False)
    _with_gaps(rows)[["churned"]].to_csv(tmp_path / "floats.csv", index=False)
    assert pd.read_csv(tmp_path / "floats.csv")["churned"].dtype == float
    model = "models:/ints@champion"
    as_ints = run_drift(
        model, str(tmp_path / "rows.csv"), tracking_uri=world["uri"],
        labels_path=str(tmp_path / "ints.csv"),
    ).report.realized  # fmt: skip
    as_floats = run_drift(
        model, str(tmp_path / "rows.csv"), tracking_uri=world["uri"],
        labels_path=str(tmp_path / "floats.csv"),
    ).report.realized  # fmt: skip
    assert as_ints is not None and as_floats is not None
    assert as_ints.value > 0.6
    assert abs(as_floats.value - as_ints.value) < 0.05


def test_drift_refuses_labels_that_match_no_class(
    world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _ints("none", 4, 200)
    rows.drop(columns="churned").to_csv(tmp_path / "rows.csv", index=False)
    rows.assign(churned=np.where(rows["churned"] == 1, "yes", "no"))[["churned"]].to_csv(
        tmp_path / "words.csv", index=False
    )
    rows_path, words = str(tmp_path / "rows.csv"), str(tmp_path / "words.csv")
    code = main(["drift", "--model", "models:/ints@champion", "--data", rows_path,
                 "--labels", words, "--tracking-uri", world["uri"]])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "is a class the model knows" in err


def test_retrain_on_float_labels_fine_tunes_and_keeps_the_served_columns(
    world: dict[str, str], tmp_path: Path
) -> None:
    name = "ints-retrain"
    version = mlflow.register_model(world["model"], name)
    MlflowClient().set_registered_model_alias(name, "champion", version.version)
    path = tmp_path / "concept.csv"
    _with_gaps(_ints("concept", 7, 1200), every=15).to_csv(path, index=False)
    outcome = run_retrain(name, str(path), "churned", tracking_uri=world["uri"], force=True)
    said = "\n".join(outcome.lines)
    assert "never saw" not in said and "fine_tune" in said
    champion = MlflowClient().get_model_version_by_alias(name, "champion")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}"))
    served = OnnxPredictor(local / "artifacts" / "network").predict(pd.read_csv(path).head(5))
    assert list(served.columns) == ["prediction", "proba_0", "proba_1"]
    assert {type(v) for v in served["prediction"]} <= {int, np.int64}
    assert "served output changes" not in said


def test_drift_retrain_and_rollback_take_the_same_model_forms(
    world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _ints("none", 5, 300)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    uri, data = world["uri"], str(tmp_path / "rows.csv")
    for form in ("ints", "ints@champion", "models:/ints@champion"):
        assert main(["drift", "--model", form, "--data", data, "--tracking-uri", uri]) == 0
        assert main(["retrain", "--model", form, "--data", data, "--target", "churned",
                     "--tracking-uri", uri, "--dry-run", "--max-epochs", "2"]) == 0  # fmt: skip
        assert "ints@champion is version 1" in capsys.readouterr().out
    # rollback: the same forms reach the model (which has no previous version to go back to).
    for form in ("ints", "models:/ints@champion"):
        assert main(["rollback", "--model", form, "--tracking-uri", uri]) == 2
        assert "model 'ints' has no version with the alias 'previous'" in capsys.readouterr().err
    assert main(["retrain", "--model", "models:/ints/1", "--data", data, "--target", "churned",
                 "--tracking-uri", uri, "--dry-run"]) == 2  # fmt: skip
    assert "takes a registered model" in capsys.readouterr().err
