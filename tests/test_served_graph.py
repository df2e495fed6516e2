"""The served graph (preprocessing, network, decoding in one ONNX model) answers as the pandas
preprocessing in front of the network's graph does, for every network kind and task."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLPSpec, build
from lightning_modules.networks.accordion import AccordionSpec
from lightning_modules.networks.cnn1d import CNN1dSpec
from lightning_modules.networks.ft_transformer import FTTransformerSpec
from lightning_modules.networks.resnet import ResNetSpec
from lightning_modules.preprocessing import Preprocessor
from search.measure import ServedRows, Timing, compose, export_onnx, measure
from search.measure.latency import runner
from search.serving import OnnxPredictor
from search.serving.served_model import prediction_frame

KINDS = ("mlp", "resnet", "ft_transformer", "cnn1d", "accordion")
TASKS = ("binary", "multiclass", "regression", "anomaly")
LABELS = {"binary": ["no", "yes"], "multiclass": [3, 5, 7], "anomaly": ["ok", "fraud"]}


def _spec(kind: str, inputs: dict[str, Any]) -> Any:
    if kind == "mlp":
        return MLPSpec(hidden=(8, 6), d_embedding=3, **inputs)
    if kind == "resnet":
        return ResNetSpec(d_main=6, hidden=(8,), d_embedding=3, **inputs)
    if kind == "ft_transformer":
        return FTTransformerSpec(d_token=8, heads=(2,), d_head=4, ffn_hidden=(6,), **inputs)
    if kind == "cnn1d":
        return CNN1dSpec(expansion=6, length=4, skip=(4,), middle=(5,), d_embedding=3, **inputs)
    return AccordionSpec(encoder=(6,), bottleneck=3, decoder=(6,), d_embedding=3, **inputs)


def _table(task: str, categorical: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 80
    table = pd.DataFrame(
        {
            # Large values: float32 input would round them before they are scaled.
            "amount": rng.normal(1e6, 5e4, n),
            "count": rng.integers(0, 9, n),
            "flag": rng.random(n) < 0.3,
        }
    )
    if categorical:
        table["shop"] = rng.choice(["north", "south", "east"], n)
        table["tier"] = rng.choice(["a", "b"], n)
        table.loc[table.index % 9 == 0, "shop"] = None
    table.loc[table.index % 7 == 0, "amount"] = np.nan
    if task == "regression":
        table["y"] = rng.normal(40.0, 12.0, n)
    else:
        table["y"] = rng.choice(LABELS[task], n)
    return table


def _raw_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows as served: gaps in numbers and categories, unseen categories, text in a number."""
    rows = table.drop(columns=["y"]).head(12).reset_index(drop=True)
    rows["count"] = rows["count"].astype(object)
    rows.loc[1, "amount"] = np.nan
    rows.loc[2, "count"] = "n/a"  # coerced to missing, as the pandas path does
    if "shop" in rows:
        rows.loc[0, "shop"] = "west"  # unseen
        rows.loc[3, "shop"] = None
        rows.loc[4, "tier"] = np.nan  # missing, never seen missing in training
    return rows


def _fitted(task: str, categorical: bool = True) -> tuple[Preprocessor, pd.DataFrame]:
    table = _table(task, categorical)
    return Preprocessor.fit(table, "y", task, LABELS.get(task)), _raw_rows(table)


def _exported(kind: str, prep: Preprocessor, directory: Path) -> Path:
    inputs = {"d_num": prep.d_num, "d_out": prep.d_out, "cat_cardinalities": prep.cat_cardinalities}
    network = build(_spec(kind, inputs), seed=0).eval()
    (directory / "preprocessor.json").write_text(json.dumps(prep.to_dict()))
    return export_onnx(network, directory / "model.onnx")


def _served(path: Path, prep: Preprocessor, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    model = compose(path, prep)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, prep.raw_columns(rows))
    return dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_served_graph_agrees_with_pandas_preprocessing(
    kind: str, task: str, tmp_path: Path
) -> None:
    prep, rows = _fitted(task)
    path = _exported(kind, prep, tmp_path)
    if task == "anomaly":
        # The median score as threshold, so that rows fall on both sides of it.
        scores = OnnxPredictor(tmp_path).predict(rows)["anomaly_score"]
        prep.anomaly_threshold = float(np.median(scores))
        (tmp_path / "preprocessor.json").write_text(json.dumps(prep.to_dict()))
    got = _served(path, prep, rows)
    expected = OnnxPredictor(tmp_path).predict(rows)
    assert list(got)[0] == "prediction"
    frame = prediction_frame(
        {k: v.astype(object) if k == "prediction" and prep.classes else v for k, v in got.items()},
        prep.classes,
    )
    assert list(frame.columns) == list(expected.columns)
    if prep.classes:
        assert frame["prediction"].tolist() == expected["prediction"].tolist()
        scores = [c for c in expected.columns if c != "prediction"]
        np.testing.assert_allclose(frame[scores], expected[scores], rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(frame["prediction"], expected["prediction"], rtol=1e-12)
    if task == "anomaly":
        assert got["anomaly_score"].shape == (len(rows),)
        assert set(frame["prediction"]) == {"ok", "fraud"}


def test_served_graph_reads_pandas_dtypes_as_the_pandas_path_does(tmp_path: Path) -> None:
    prep, rows = _fitted("binary")
    rows = rows.drop(index=2).reset_index(drop=True)  # the text in a number, tested above
    rows["count"] = rows["count"].astype("Int64")
    rows.loc[5, "count"] = pd.NA  # a nullable integer's gap
    rows["shop"] = rows["shop"].astype("category")
    rows["tier"] = rows["tier"].astype("string")
    rows["flag"] = rows["flag"].astype("boolean")
    path = _exported("mlp", prep, tmp_path)
    got = _served(path, prep, rows)
    expected = OnnxPredictor(tmp_path).predict(rows)
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(got["probabilities"][:, 1], expected["proba_yes"], atol=1e-6)


@pytest.mark.parametrize("categorical", [True, False])
def test_served_graph_takes_one_input_per_raw_column_and_describes_its_outputs(
    categorical: bool, tmp_path: Path
) -> None:
    prep, rows = _fitted("multiclass", categorical)
    model = compose(_exported("mlp", prep, tmp_path), prep)
    types = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(types) == prep.feature_columns
    assert [d.dim_value for d in types["amount"].shape.dim][1:] == [1]
    assert types["amount"].elem_type == 11  # double
    if categorical:
        assert types["shop"].elem_type == 8  # string
    assert [o.name for o in model.graph.output] == ["prediction", "probabilities"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["tabslim.task"] == "multiclass"
    assert meta["tabslim.classes"] == "[3, 5, 7]"
    got = _served(tmp_path / "model.onnx", prep, rows)
    assert got["prediction"].dtype == np.int64
    assert set(got["prediction"]) <= {3, 5, 7}


def test_a_categorical_only_table_serves(tmp_path: Path) -> None:
    table = _table("binary").drop(columns=["amount", "count", "flag"])
    prep = Preprocessor.fit(table, "y", "binary", LABELS["binary"])
    rows = _raw_rows(table.assign(amount=0.0, count=0)).drop(columns=["amount", "count"])
    path = _exported("ft_transformer", prep, tmp_path)
    got = _served(path, prep, rows)
    expected = OnnxPredictor(tmp_path).predict(rows)
    np.testing.assert_allclose(got["probabilities"][:, 1], expected["proba_yes"], atol=1e-6)


def test_a_column_named_like_an_output_is_refused_in_one_line(tmp_path: Path) -> None:
    table = _table("binary").rename(columns={"count": "prediction"})
    prep = Preprocessor.fit(table, "y", "binary", LABELS["binary"])
    path = _exported("mlp", prep, tmp_path)
    with pytest.raises(TabslimInputError, match="prediction"):
        compose(path, prep)


def test_a_served_latency_times_the_served_graph_on_raw_rows() -> None:
    prep, rows = _fitted("binary")
    inputs = {"d_num": prep.d_num, "d_out": prep.d_out, "cat_cardinalities": prep.cat_cardinalities}
    network = build(_spec("mlp", inputs), seed=0).eval()
    served = ServedRows(prep, rows)
    with runner(network, "onnxruntime", 1, None, served) as make_call:
        # 30 rows from 12: the rows repeat. The call answers in labels: the decoding ran too.
        prediction, probabilities = make_call(30)()
    assert prediction.shape == (30,) and set(prediction) <= {"no", "yes"}
    assert probabilities.shape == (30, 2)
    quick = Timing(warmup=1, min_repeats=2, max_repeats=2, max_seconds=0.0)
    timed = functools.partial(
        measure, network, batch_sizes=(1, 30), runtimes=("onnxruntime",), timing=quick
    )
    metrics = timed(served=served, time_network=True).to_metrics()
    for batch in (1, 30):
        assert metrics[f"latency_onnxruntime_b{batch}_median_ms"] > 0
        assert metrics[f"latency_network_onnxruntime_b{batch}_median_ms"] > 0
    # A search trial times the served graph only: the bare network is not its objective.
    trial = timed(served=served).to_metrics()
    assert "latency_onnxruntime_b30_median_ms" in trial
    assert not any(name.startswith("latency_network") for name in trial)
