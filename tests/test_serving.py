"""The logged model serves what was measured: ONNX Runtime, with no torch, over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from search.commands import main
from search.front import served_lines
from search.serving import (
    ServedLatency,
    ServerFailed,
    model_server,
    poster,
    predict_frame,
    time_served,
)

BIN = Path(sys.executable).parent


def _rows(table: pd.DataFrame) -> pd.DataFrame:
    """Raw rows as a user sends them: a category never seen in training, and gaps."""
    rows = table.drop(columns=["label"]).head(6).reset_index(drop=True)
    rows.loc[0, "shop"] = "west"  # unseen
    rows.loc[1, "f0"] = np.nan
    rows.loc[2, "shop"] = None
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("serve")
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    table["shop"] = np.random.default_rng(0).choice(["north", "south", "east"], size=len(table))
    table.loc[table.index % 10 == 0, "f0"] = np.nan
    table["label"] = np.where(y == 1, "yes", "no")
    path = root / "table.csv"
    table.to_csv(path, index=False)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    assert main(
        ["train", "--data", str(path), "--target", "label", "--tracking-uri", uri, "--quiet",
         "--max-epochs", "3"]
    ) == 0  # fmt: skip
    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    (model,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    return uri, model.model_uri, _rows(table)


def test_the_served_model_is_the_onnx_graph_and_agrees_with_torch(
    trained: tuple[str, str, pd.DataFrame],
) -> None:
    uri, model_uri, rows = trained
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(model_uri).predict(rows)
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    network_dir = next(local.rglob("model.onnx")).parent
    assert {p.name for p in network_dir.iterdir()} >= {"spec.json", "weights.pt", "model.onnx"}
    from search.serving import load_network

    _, network, preprocessor = load_network(network_dir)
    reference = predict_frame(network, preprocessor, rows)
    assert list(served.columns) == ["prediction", "proba_no", "proba_yes"]
    assert served["prediction"].tolist() == reference["prediction"].tolist()
    np.testing.assert_allclose(
        served[["proba_no", "proba_yes"]], reference[["proba_no", "proba_yes"]], atol=1e-5
    )


def test_serving_needs_no_torch(trained: tuple[str, str, pd.DataFrame], tmp_path: Path) -> None:
    uri, model_uri, rows = trained
    rows_path = tmp_path / "rows.json"
    rows.to_json(rows_path, orient="split")
    # `sys.modules["torch"] = None` makes every `import torch` fail, as if it were not installed.
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['pytorch_lightning'] = None\n"
        "import mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({uri!r})\n"
        f"rows = pd.read_json({str(rows_path)!r}, orient='split')\n"
        f"print(mlflow.pyfunc.load_model({model_uri!r}).predict(rows).to_json(orient='split'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["columns"] == ["prediction", "proba_no", "proba_yes"]
    assert len(printed["data"]) == len(rows)


def test_the_served_latency_times_each_model_in_process_beside_its_graph(
    trained: tuple[str, str, pd.DataFrame],
) -> None:
    uri, model_uri, rows = trained
    models = {"baseline": model_uri, "champion": model_uri}
    latencies, problem = time_served(
        models, rows, tracking_uri=uri, batch_sizes=(1, 8), seconds=0.1
    )
    assert problem is None
    assert [(t.model, t.rows) for t in latencies] == [
        ("baseline", 1), ("baseline", 8), ("champion", 1), ("champion", 8)
    ]  # fmt: skip
    for timed in latencies:
        # The pyfunc model runs the same graph, and pandas and MLflow around it.
        assert 0 < timed.graph_ms < timed.in_process_ms
        assert timed.http_ms is None
        assert ServedLatency.from_dict(timed.to_dict()) == timed
    lines = served_lines(latencies)
    assert lines[0].startswith("served latency")
    assert sum("champion / baseline" in line for line in lines) == 2
    assert any("HTTP not measured" in line for line in lines)


@pytest.mark.slow
def test_mlflow_models_serve_answers_over_http_as_in_process(
    trained: tuple[str, str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, model_uri, rows = trained
    mlflow.set_tracking_uri(uri)
    expected = mlflow.pyfunc.load_model(model_uri).predict(rows)
    with model_server(model_uri, uri, tmp_path) as port:
        predictions = pd.DataFrame(json.loads(poster(port, rows)())["predictions"])
    assert predictions["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(
        predictions[["proba_no", "proba_yes"]], expected[["proba_no", "proba_yes"]], atol=1e-6
    )
    # Timed over HTTP too: a POST costs more than the call in-process it wraps. From the
    # store's folder with a relative URI, as the default config's sqlite:///mlruns/mlflow.db is
    # (the server once ran elsewhere, found no model there and exited).
    store = Path(uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(store.parent.parent)
    relative = f"sqlite:///{store.relative_to(store.parent.parent)}"
    (one,), problem = time_served(
        {"champion": model_uri}, rows, tracking_uri=relative, batch_sizes=(1,), http=True,
        seconds=0.2,
    )  # fmt: skip
    assert problem is None and one.http_ms is not None and one.http_ms > one.in_process_ms
    # A server that cannot start says so, in one line, instead of waiting.
    with (
        pytest.raises(ServerFailed, match="exited"),
        model_server("models:/no-such-model/1", uri, tmp_path),
    ):
        pass
