"""The MLflow model tabslim logs: raw pandas rows in, predictions out, preprocessing inside.

What is stored is plain data: the network spec and preprocessing as JSON, the weights as a
tensor-only state_dict (loaded with weights_only=True). Nothing pickles a module.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel
from torch import nn

from lightning_modules.networks import MLPSpec, load
from lightning_modules.preprocessing import Preprocessor

SPEC_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE = "spec.json", "preprocessor.json", "weights.pt"
_PACKAGES = Path(__file__).resolve().parent.parent
_ENTRY = Path(__file__).resolve().parent / "pyfunc_entry.py"


def save_network(
    directory: Path, spec: MLPSpec, network: nn.Module, preprocessor: Preprocessor
) -> Path:
    """Write spec, preprocessing and weights to `directory`: everything a model is rebuilt from."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor.to_dict(), indent=2))
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    return directory


def load_network(directory: Path) -> tuple[MLPSpec, nn.Module, Preprocessor]:
    spec = MLPSpec.from_dict(json.loads((directory / SPEC_FILE).read_text()))
    preprocessor = Preprocessor.from_dict(json.loads((directory / PREPROCESSOR_FILE).read_text()))
    state = torch.load(directory / WEIGHTS_FILE, weights_only=True, map_location="cpu")
    return spec, load(spec, state).eval(), preprocessor


def predict_frame(
    network: nn.Module, preprocessor: Preprocessor, rows: pd.DataFrame
) -> pd.DataFrame:
    """Predictions for raw rows: a `prediction` column, plus `proba_<class>` for classifiers."""
    inputs = preprocessor.transform(rows)
    with torch.inference_mode():
        output = network(inputs["x_num"], inputs["x_cat"])
    decoded = preprocessor.decode(output)
    result = pd.DataFrame({"prediction": decoded["prediction"]})
    if "probabilities" in decoded:
        for i, label in enumerate(preprocessor.classes):
            result[f"proba_{label}"] = decoded["probabilities"][:, i]
    return result


class TabslimModel(PythonModel):
    """pyfunc wrapper; the network and preprocessing are loaded from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        _, self.network, self.preprocessor = load_network(Path(context.artifacts["network"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return predict_frame(self.network, self.preprocessor, pd.DataFrame(model_input))


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
    spec: MLPSpec,
    network: nn.Module,
    preprocessor: Preprocessor,
    sample: pd.DataFrame,
    *,
    name: str = "model",
) -> Any:
    """Log the network as an MLflow pyfunc model in the active run; returns its ModelInfo."""
    network = network.cpu().eval()
    example = sample.reset_index(drop=True)
    output = predict_frame(network, preprocessor, example)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow hints about integer columns in the input example; inputs are not enforced.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent.*")
        directory = save_network(Path(tmp) / "network", spec, network, preprocessor)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_ENTRY),
            artifacts={"network": str(directory)},
            # The code travels with the model, so it loads where tabslim is not installed.
            code_paths=[str(_PACKAGES / "search"), str(_PACKAGES / "lightning_modules")],
            signature=_signature(output),
            input_example=example,
            # Listing requirements skips MLflow's inference, which loads the model in a subprocess.
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"mlflow=={mlflow.__version__}",
                "pytorch-lightning",
                "torchmetrics",
                "scikit-learn",
                "pydantic",
                "pyyaml",
            ],
        )
