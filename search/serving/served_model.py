"""The MLflow model as it serves: raw rows in, ONNX Runtime inside, no torch needed.

What is measured is what is deployed: the logged model answers with the ONNX graph
that `search.measure.export` wrote and checked against torch, the kind of graph a trial's
latency was timed on. The spec and PyTorch weights travel beside it, for retraining and
fine-tuning. This module imports neither torch nor Lightning, so `mlflow models serve` needs
neither installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from lightning_modules.preprocessing import Preprocessor

SPEC_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE = "spec.json", "preprocessor.json", "weights.pt"
# Training rows kept with a model for retraining (`search.monitor.challengers`); serving
# ignores them.
REFERENCE_ROWS_FILE = "reference_rows.parquet"
# The reference profile of the training data, for drift checks (`search.serving.profile`).
PROFILE_FILE = "profile.json"
# A regression's loss model, which estimates its RMSE on unlabelled rows
# (`search.serving.estimator`): skops, no pickle, beside the profile that describes it. Models
# logged before stored `loss_model.npz` (`search.serving.loss_model` reads both).
LOSS_MODEL_FILE = "loss_model.skops"
ONNX_FILE = "model.onnx"
# The served graph: preprocessing, network and decoding in one (`search.measure.served_graph`).
# A model logged before it existed has only the network's graph and serves through pandas.
SERVED_FILE = "served.onnx"


def prediction_frame(decoded: dict[str, np.ndarray], classes: list[Any]) -> pd.DataFrame:
    """A `prediction` column, plus `anomaly_score`, or `proba_<class>` for classifiers.

    Built in one step: adding columns one by one cost more than the network on a small batch,
    and a model of many classes printed a pandas PerformanceWarning per column.
    """
    columns: dict[str, Any] = {"prediction": decoded["prediction"]}
    if "anomaly_score" in decoded:
        columns["anomaly_score"] = decoded["anomaly_score"]
    if "probabilities" in decoded:
        probabilities = decoded["probabilities"]
        columns |= {f"proba_{label}": probabilities[:, i] for i, label in enumerate(classes)}
    # No copy: the arrays are the caller's fresh outputs, and pandas' copy cost as much again.
    return pd.DataFrame(columns, copy=False)


class OnnxPredictor:
    """The preprocessing and an ONNX Runtime session of one saved network folder."""

    def __init__(self, directory: Path) -> None:
        import onnxruntime as ort

        self.preprocessor = Preprocessor.from_dict(
            json.loads((directory / PREPROCESSOR_FILE).read_text())
        )
        self.session = ort.InferenceSession(
            str(directory / ONNX_FILE), providers=["CPUExecutionProvider"]
        )
        # A network without categorical columns was exported with x_num alone.
        self.input_names = [node.name for node in self.session.get_inputs()]

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        arrays = self.preprocessor.transform_arrays(rows)
        output = self.session.run(None, {name: arrays[name] for name in self.input_names})[0]
        decoded = self.preprocessor.decode_arrays(np.asarray(output), arrays["x_num"])
        return prediction_frame(decoded, self.preprocessor.classes)


class GraphPredictor:
    """One ONNX Runtime call on the raw columns of a saved network folder's served graph."""

    def __init__(self, directory: Path) -> None:
        import onnxruntime as ort

        self.preprocessor = Preprocessor.from_dict(
            json.loads((directory / PREPROCESSOR_FILE).read_text())
        )
        self.session = ort.InferenceSession(
            str(directory / SERVED_FILE), providers=["CPUExecutionProvider"]
        )
        self.output_names = [node.name for node in self.session.get_outputs()]

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        outputs = self.session.run(None, self.preprocessor.raw_columns(rows))
        decoded = dict(zip(self.output_names, outputs, strict=True))
        if self.preprocessor.classes:
            # Labels as Python objects, as the pandas path gives them.
            decoded["prediction"] = decoded["prediction"].astype(object)
        return prediction_frame(decoded, self.preprocessor.classes)


def predictor(directory: Path) -> GraphPredictor | OnnxPredictor:
    """The served graph where the folder has one, else the network's graph behind pandas."""
    if (directory / SERVED_FILE).exists():
        return GraphPredictor(directory)
    return OnnxPredictor(directory)


class TabslimModel(PythonModel):
    """pyfunc wrapper; the ONNX graph and preprocessing are loaded from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        self.predictor = predictor(Path(context.artifacts["network"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        rows = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predictor.predict(rows)
