from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from search.commands import main

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One real `tabslim train` on a small CSV into a fresh SQLite store."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50, 10, n),
            "shop": rng.choice(["north", "south", "east"], n),
        }
    )
    frame.loc[::9, "income"] = np.nan
    frame["bought"] = np.where(frame["age"] + (frame["shop"] == "north") * 20 > 55, "yes", "no")
    csv = root / "customers.csv"
    frame.to_csv(csv, index=False)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    code = main(
        ["train", "--data", str(csv), "--target", "bought", "--tracking-uri", uri,
         "--max-epochs", "3", "--quiet"]
    )  # fmt: skip
    return {"code": code, "uri": uri, "csv": csv, "frame": frame, "root": root}


def test_train_logs_run_metrics_and_a_raw_row_model(trained: dict[str, object]) -> None:
    assert trained["code"] == 0
    mlflow.set_tracking_uri(str(trained["uri"]))
    runs = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    metrics, params = run.data.metrics, run.data.params
    for name in ["val_accuracy", "test_accuracy", "val_roc_auc", "val_log_loss", "parameters",
                 "size_bytes", "flops", "latency_torch_b1_median_ms",
                 "latency_onnxruntime_b1024_median_ms", "train_seconds"]:  # fmt: skip
        assert name in metrics, name
    assert 0.5 <= metrics["val_accuracy"] <= 1.0
    # Where the time went, phase by phase; the fit phase holds the training and more.
    for phase in ("read", "preprocess", "fit", "profile", "log", "measure"):
        assert metrics[f"seconds.{phase}"] > 0, phase
    assert metrics["seconds.fit"] >= metrics["train_seconds"]
    assert params["data.target"] == "bought" and params["data.task"] == "binary"
    assert params["model.widths"] == "256-256-128"
    # Artifacts live beside the SQLite store, under the same mlruns/ folder.
    assert run.info.artifact_uri.startswith((Path(str(trained["root"])) / "mlruns").as_uri())

    (logged,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    raw = pd.DataFrame(
        {"age": [25, 70, 40], "income": [np.nan, 60.0, 45.5], "shop": ["north", "moon", None]}
    )
    predicted = model.predict(raw)
    assert list(predicted.columns) == ["prediction", "proba_no", "proba_yes"]
    assert set(predicted["prediction"]) <= {"yes", "no"}
    assert np.allclose(predicted[["proba_no", "proba_yes"]].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_mlflow_models_predict_cli_serves_raw_csv(trained: dict[str, object]) -> None:
    mlflow.set_tracking_uri(str(trained["uri"]))
    (run,) = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    (logged,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    root = Path(str(trained["root"]))
    rows = root / "rows.csv"
    frame = trained["frame"]
    assert isinstance(frame, pd.DataFrame)
    frame.drop(columns=["bought"]).head(4).to_csv(rows, index=False)
    out = root / "pred.json"
    done = subprocess.run(
        [str(BIN / "mlflow"), "models", "predict", "-m", f"models:/{logged.model_id}",
         "-i", str(rows), "-t", "csv", "-o", str(out), "--env-manager", "local"],
        env={"MLFLOW_TRACKING_URI": str(trained["uri"]), "PATH": str(BIN)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    served = pd.DataFrame(json.loads(out.read_text())["predictions"])
    # The served model answers exactly as the one loaded in this process, row for row.
    expected = mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(pd.read_csv(rows))
    assert len(served) == 4
    pd.testing.assert_frame_equal(
        served[list(expected.columns)], expected, check_dtype=False, atol=1e-6
    )


def _store_fingerprint(uri: str) -> tuple[str, int]:
    path = Path(uri.removeprefix("sqlite:///"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    mlflow.set_tracking_uri(uri)
    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()]
    )
    return digest, len(runs)


def _bad_inputs(root: Path, good_csv: Path) -> list[tuple[list[str], str]]:
    def csv(name: str, frame: pd.DataFrame | None, text: str | None = None) -> str:
        path = root / name
        if frame is not None:
            frame.to_csv(path, index=False)
        else:
            path.write_bytes((text or "").encode("latin-1"))
        return str(path)

    good = pd.read_csv(good_csv)
    config = root / "bad_key.yaml"
    config.write_text("data:\n  dataset: wine\ntraining:\n  epochs: 3\n")
    wrong_type = root / "wrong_type.yaml"
    wrong_type.write_text("data:\n  dataset: wine\ntraining:\n  batch_size: many\n")
    out_of_range = root / "range.yaml"
    out_of_range.write_text("data:\n  dataset: wine\nmodel:\n  dropout: 1.5\n")
    return [
        (["--data", str(root / "missing.csv"), "--target", "y"], "missing.csv' does not exist"),
        (["--data", csv("empty.csv", None, ""), "--target", "y"], "empty.csv' is empty"),
        (["--data", csv("binary.csv", None, '"a\n\x00\xff"b,,"'), "--target", "y"],
         "could not read"),
        (["--data", str(good_csv), "--target", "price"], "target column 'price' is not in"),
        (["--data", csv("no_y.csv", good.assign(bought=np.nan)), "--target", "bought"],
         "'bought' .* is entirely missing"),
        (["--data", csv("one.csv", good.assign(bought="yes")), "--target", "bought"],
         "single class"),
        (["--data", str(good_csv), "--target", "bought", "--task", "regression"], "not numeric"),
        (["--data", csv("gap.csv", good.assign(age=np.nan)), "--target", "bought"],
         "column 'age' .* entirely missing"),
        (["--data", csv("few.csv", good.head(9)), "--target", "bought"], "too few rows"),
        (["--config", str(config)], "unknown key 'training.epochs'"),
        (["--config", str(wrong_type)], "training.batch_size: .*integer, but got 'many'"),
        (["--config", str(out_of_range)], "model.dropout: .*less than 1"),
        (["--data", str(good_csv)], "--data needs --target"),
    ]  # fmt: skip


def test_bad_input_exits_2_with_one_line_and_leaves_mlflow_untouched(
    trained: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(trained["uri"])
    before = _store_fingerprint(uri)
    root = Path(str(trained["root"]))
    for args, message in _bad_inputs(root, Path(str(trained["csv"]))):
        code = main(["train", *args, "--tracking-uri", uri, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (args, err)
        assert lines[0].startswith("tabslim: error: ")
        assert re.search(message, lines[0]), (message, lines[0])
        assert "Traceback" not in err
    assert _store_fingerprint(uri) == before


def test_console_script_help_and_a_bad_input(tmp_path: Path) -> None:
    shown = subprocess.run([str(BIN / "tabslim"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "train" in shown.stdout
    bad = subprocess.run(
        [str(BIN / "tabslim"), "train", "--data", str(tmp_path / "x.csv"), "--target", "y"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    expected = f"data file '{tmp_path / 'x.csv'}' does not exist (expected a CSV or Parquet file)"
    assert bad.stderr.strip() == f"tabslim: error: {expected}"
    assert not (tmp_path / "mlruns").exists()
    usage = subprocess.run(
        [str(BIN / "tabslim"), "train", "--max-epochs", "0"], capture_output=True, text=True
    )
    assert usage.returncode == 2 and "expected a positive integer" in usage.stderr


def test_train_notes_a_network_no_better_than_a_constant_guess(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A target that no column predicts, 95% one class: the network can only learn the majority.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    frame["y"] = np.where(rng.random(400) < 0.95, "no", "yes")
    path = tmp_path / "noise.csv"
    frame.to_csv(path, index=False)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    code = main(
        ["train", "--data", str(path), "--target", "y", "--tracking-uri", uri, "--quiet",
         "--max-epochs", "3"]
    )  # fmt: skip
    assert code == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "tabslim: note:" in line]
    assert len(notes) == 1
    assert "no better than always predicting the most frequent class" in notes[0]


def test_notes_never_join_a_bad_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # digits has constant columns, a note; the storage fails after the table has loaded.
    code = main(
        ["search", "--dataset", "digits", "--quiet", "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage",
         "postgresql://nobody:secret@127.0.0.1:1/none"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tabslim: error: cannot open storage")
    assert "secret" not in err[0]


def test_a_column_role_the_table_lacks_is_one_line(
    small_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["train", "--data", str(small_csv), "--target", "label", "--drop-columns", "f1,nope",
         "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("tabslim: error: the table has no column 'nope'")
