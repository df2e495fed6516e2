"""The MLflow model tabslim logs: raw pandas rows in, predictions out, preprocessing inside.

What is stored is plain data: the network spec and preprocessing as JSON, the weights as a
tensor-only state_dict (loaded with weights_only=True), and the ONNX graph the model serves
with (`search.served_model`). Nothing pickles a module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from mlflow.models import ModelSignature, infer_signature
from torch import nn

from lightning_modules.family import NetworkSpec
from lightning_modules.networks import load, spec_from_dict
from lightning_modules.preprocessing import Preprocessor
from search.export import export_onnx
from search.served_model import (
    ONNX_FILE,
    PREPROCESSOR_FILE,
    PROFILE_FILE,
    REFERENCE_ROWS_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    OnnxPredictor,
    prediction_frame,
)

__all__ = [
    "PREPROCESSOR_FILE",
    "SPEC_FILE",
    "WEIGHTS_FILE",
    "load_network",
    "log_model",
    "predict_frame",
    "save_network",
]
_PACKAGES = Path(__file__).resolve().parent.parent
_ENTRY = Path(__file__).resolve().parent / "pyfunc_entry.py"


def save_network(
    directory: Path, spec: NetworkSpec, network: nn.Module, preprocessor: Preprocessor
) -> Path:
    """Write spec, preprocessing and weights to `directory`: everything a model is rebuilt from."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor.to_dict(), indent=2))
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    return directory


def load_network(directory: Path) -> tuple[NetworkSpec, nn.Module, Preprocessor]:
    spec = spec_from_dict(json.loads((directory / SPEC_FILE).read_text()))
    preprocessor = Preprocessor.from_dict(json.loads((directory / PREPROCESSOR_FILE).read_text()))
    state = torch.load(directory / WEIGHTS_FILE, weights_only=True, map_location="cpu")
    return spec, load(spec, state).eval(), preprocessor


def predict_frame(
    network: nn.Module, preprocessor: Preprocessor, rows: pd.DataFrame
) -> pd.DataFrame:
    """Predictions of the torch network for raw rows, in the served model's columns."""
    inputs = preprocessor.transform(rows)
    with torch.inference_mode():
        output = network.cpu().eval()(inputs["x_num"], inputs["x_cat"])
    decoded = preprocessor.decode(output, inputs["x_num"])
    return prediction_frame(decoded, preprocessor.classes)


def _signature(output: pd.DataFrame) -> ModelSignature:
    """Outputs only: the input is checked by the preprocessing, which knows better than MLflow.

    MLflow's input enforcement refuses int64 for a double column ("can not safely convert"), so a
    CSV whose numbers happen to be whole would fail; the preprocessor coerces numbers and reports
    missing columns by name instead. The logged input example still shows the expected columns.
    """
    output = output.copy()
    for column in output.columns:
        if pd.api.types.is_integer_dtype(output[column]):
            output[column] = output[column].astype("float64")
    return ModelSignature(inputs=None, outputs=infer_signature(None, output).outputs)


def log_model(
    spec: NetworkSpec,
    network: nn.Module,
    preprocessor: Preprocessor,
    sample: pd.DataFrame,
    *,
    name: str = "model",
    profile: dict[str, Any] | None = None,
    onnx_graph: Path | None = None,
    reference_rows: pd.DataFrame | None = None,
) -> Any:
    """Log the network as an MLflow pyfunc model in the active run; returns its ModelInfo.

    Args:
        profile: the reference profile (`search.profile`), stored beside the weights.
        onnx_graph: the graph to serve (e.g. an INT8 copy), instead of a fresh fp32 export.
        reference_rows: training rows to store with the model, for retraining.
    """
    network = network.cpu().eval()
    example = sample.reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow hints about integer columns in the input example; inputs are not enforced.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent.*")
        directory = save_network(Path(tmp) / "network", spec, network, preprocessor)
        if profile is not None:
            (directory / PROFILE_FILE).write_text(json.dumps(profile))
        if reference_rows is not None:
            reference_rows.to_parquet(directory / REFERENCE_ROWS_FILE, index=False)
        if onnx_graph is not None:
            shutil.copyfile(onnx_graph, directory / ONNX_FILE)
        else:
            # The graph the model serves with, verified against torch by the export itself.
            export_onnx(network, directory / ONNX_FILE)
        output = OnnxPredictor(directory).predict(example)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_ENTRY),
            artifacts={"network": str(directory)},
            # The code travels with the model, so it loads where tabslim is not installed.
            code_paths=[str(_PACKAGES / "search"), str(_PACKAGES / "lightning_modules")],
            signature=_signature(output),
            input_example=example,
            # Serving imports neither torch nor Lightning (search/served_model.py). Listing the
            # requirements also skips MLflow's inference, which loads the model in a subprocess.
            pip_requirements=[
                f"onnxruntime=={ort.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
        )
