"""`tabslim export`: one ONNX file that runs under ONNX Runtime alone and answers as the logged
model does; models logged before the served graph still load, predict and export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from search.commands import main

# Runs in a fresh interpreter where importing torch or tabslim fails: the file needs neither.
_ORT_ONLY = """
import json, sys
for name in ("torch", "search", "lightning_modules", "pandas", "mlflow"):
    sys.modules[name] = None
import numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
columns = json.load(open(sys.argv[2]))
feeds = {}
for node in session.get_inputs():
    values = columns[node.name]
    if node.type == "tensor(string)":
        feeds[node.name] = np.array(["<missing>" if v is None else v for v in values], object)
    else:
        feeds[node.name] = np.array([np.nan if v is None else v for v in values], np.float64)
    feeds[node.name] = feeds[node.name].reshape(-1, 1)
prediction, probabilities = session.run(None, feeds)
meta = session.get_modelmeta().custom_metadata_map
assert not any(sys.modules.get(m) for m in ("torch", "search", "lightning_modules"))
print(json.dumps({"prediction": prediction.tolist(), "probabilities": probabilities.tolist(),
                  "classes": json.loads(meta["tabslim.classes"])}))
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({f"f{i}": rng.normal(size=240) for i in range(4)})
    table["shop"] = rng.choice(["north", "south", "east"], size=len(table))
    table.loc[table.index % 10 == 0, "f0"] = np.nan
    table["label"] = np.where(table["f1"] + (table["shop"] == "east") > 0.3, "yes", "no")
    path = root / "table.csv"
    table.to_csv(path, index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert main(
        ["train", "--data", str(path), "--target", "label", "--tracking-uri", uri, "--quiet",
         "--max-epochs", "2"]
    ) == 0  # fmt: skip
    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    (model,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    rows = table.drop(columns=["label"]).head(8).reset_index(drop=True)
    rows.loc[0, "shop"] = "west"  # unseen
    rows.loc[1, "f2"] = np.nan
    rows.loc[2, "shop"] = None
    return uri, model.model_uri, rows


def _run_alone(model: Path, rows: pd.DataFrame, tmp_path: Path) -> dict:
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({c: json.loads(rows[c].to_json(orient="values")) for c in rows}))
    done = subprocess.run(
        [sys.executable, "-c", _ORT_ONLY, str(model), str(columns)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_exported_file_runs_under_onnxruntime_alone_and_agrees_with_the_logged_model(
    logged: tuple[str, str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, model_uri, rows = logged
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", model_uri, "--out", str(out), "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "shop (string)" in printed and "f0 (double)" in printed
    assert "prediction, probabilities" in printed
    answer = _run_alone(out, rows, tmp_path)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(model_uri).predict(rows)
    assert answer["classes"] == ["no", "yes"]
    assert answer["prediction"] == served["prediction"].tolist()
    np.testing.assert_allclose(
        answer["probabilities"], served[["proba_no", "proba_yes"]], rtol=0, atol=1e-6
    )


def test_a_model_logged_before_the_served_graph_still_predicts_and_exports(
    logged: tuple[str, str, pd.DataFrame], tmp_path: Path
) -> None:
    uri, model_uri, rows = logged
    mlflow.set_tracking_uri(uri)
    expected = mlflow.pyfunc.load_model(model_uri).predict(rows)
    old = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "old")))
    # What a model logged before this change holds: the network's graph, no served graph.
    (old / "artifacts" / "network" / "served.onnx").unlink()
    got = mlflow.pyfunc.load_model(str(old)).predict(rows)
    pd.testing.assert_frame_equal(got, expected, atol=1e-6)
    out = tmp_path / "exported.onnx"
    assert main(["export", "--model", str(old), "--out", str(out), "--tracking-uri", uri]) == 0
    answer = _run_alone(out, rows, tmp_path)
    assert answer["prediction"] == expected["prediction"].tolist()


def test_export_of_what_is_not_a_tabslim_model_is_one_line(
    logged: tuple[str, str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, model_uri, _ = logged
    bare = tmp_path / "bare"
    mlflow.set_tracking_uri(uri)
    shutil.copytree(mlflow.artifacts.download_artifacts(model_uri), bare)
    shutil.rmtree(bare / "artifacts" / "network")
    out = str(tmp_path / "m.onnx")
    for model in ("models:/nothing@champion", str(bare)):
        assert main(["export", "--model", model, "--out", out, "--tracking-uri", uri]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tabslim: error:") and len(err.strip().splitlines()) == 1, err
