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
# (`search.serving.estimator`): plain arrays, beside the profile that describes it.
LOSS_MODEL_FILE = "loss_model.npz"
ONNX_FILE = "model.onnx"


def prediction_frame(decoded: dict[str, np.ndarray], classes: list[Any]) -> pd.DataFrame:
    """A `prediction` column, plus `proba_<class>` for classifiers."""
    columns: dict[str, np.ndarray] = {"prediction": decoded["prediction"]}
    if "anomaly_score" in decoded:
        columns["anomaly_score"] = decoded["anomaly_score"]
    if "probabilities" in decoded:
        probabilities = decoded["probabilities"]
        columns |= {f"proba_{label}": probabilities[:, i] for i, label in enumerate(classes)}
    # In one step: a column inserted at a time fragments the frame, and a model of many
    # classes printed a pandas PerformanceWarning per column.
    return pd.DataFrame(columns)


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


class TabslimModel(PythonModel):
    """pyfunc wrapper; the ONNX graph and preprocessing are loaded from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        self.predictor = OnnxPredictor(Path(context.artifacts["network"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return self.predictor.predict(pd.DataFrame(model_input))
