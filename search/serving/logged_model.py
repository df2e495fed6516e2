"""The MLflow model tabslim logs: raw pandas rows in, predictions out, preprocessing inside.

What is stored is plain data: the network files (`search.serving.network_files`) and the ONNX
graph the model serves with (`search.serving.served_model`), beside the reference profile and,
optionally, a sample of training rows. Nothing pickles a module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lazy_loader
import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import NetworkSpec
from lightning_modules.preprocessing import Preprocessor
from search.measure import compose, export_onnx
from search.serving.network_files import save_network
from search.serving.profile import write_profile
from search.serving.served_model import (
    ONNX_FILE,
    REFERENCE_ROWS_FILE,
    SERVED_FILE,
    GraphPredictor,
)
from search.serving.signature import input_schema

__all__ = ["FRONT_TAG", "front_widths", "log_model", "reference_sample"]

_PACKAGES = Path(__file__).resolve().parents[2]
_ENTRY = Path(__file__).resolve().parent / "pyfunc_entry.py"
# The registered champion's tag listing the group widths of its study's front (JSON); retraining
# seeds its searched challenger with them.
FRONT_TAG = "tabslim.front_widths"


def front_widths(tags: dict[str, str]) -> list[list[int]]:
    """The front's widths a champion's version tags carry (none for older versions)."""
    return [list(map(int, w)) for w in json.loads(tags.get(FRONT_TAG, "[]"))]


def reference_sample(data: TabularDataModule, rows: int, seed: int = 0) -> pd.DataFrame | None:
    """Up to `rows` seeded training rows (features and target) to store with a model."""
    if rows <= 0:
        return None
    frame = data.train_frame
    picked = np.random.default_rng(seed).permutation(len(frame))[:rows]
    return frame.iloc[np.sort(picked)].reset_index(drop=True)


def _signature(
    output: pd.DataFrame, preprocessor: Preprocessor, sample: pd.DataFrame
) -> ModelSignature:
    """Each input column with its exact training type (`search.serving.signature`), so that
    MLflow refuses text in a numeric column by name instead of the preprocessing imputing it."""
    output = output.copy()
    for column in output.columns:
        if pd.api.types.is_integer_dtype(output[column]):
            output[column] = output[column].astype("float64")
    return ModelSignature(
        inputs=input_schema(preprocessor, sample), outputs=infer_signature(None, output).outputs
    )


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
        profile: the reference profile (`search.serving.profile`), stored beside the weights.
        onnx_graph: the graph to serve (e.g. an INT8 copy), instead of a fresh fp32 export.
        reference_rows: training rows to store with the model, for retraining.
    """
    network = network.cpu().eval()
    example = sample.reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow hints that an integer column cannot hold a gap; `signature.py` says what to send.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent.*")
        directory = save_network(Path(tmp) / "network", spec, network, preprocessor)
        if profile is not None:
            write_profile(directory, profile)
        if reference_rows is not None:
            reference_rows.to_parquet(directory / REFERENCE_ROWS_FILE, index=False)
        if onnx_graph is not None:
            shutil.copyfile(onnx_graph, directory / ONNX_FILE)
        else:
            # The graph the model serves with, verified against torch by the export itself.
            export_onnx(network, directory / ONNX_FILE)
        # What serves: one graph on the raw columns, preprocessing and decoding inside.
        onnx.save(compose(directory / ONNX_FILE, preprocessor), str(directory / SERVED_FILE))
        output = GraphPredictor(directory).predict(example)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_ENTRY),
            artifacts={"network": str(directory)},
            # The code travels with the model, so it loads where tabslim is not installed.
            code_paths=[str(_PACKAGES / "search"), str(_PACKAGES / "lightning_modules")],
            signature=_signature(output, preprocessor, example),
            input_example=example,
            # Serving imports neither torch nor Lightning (search/serving/served_model.py).
            # Listing the requirements also skips MLflow's inference, which loads the model in a
            # subprocess.
            pip_requirements=[
                f"onnxruntime=={ort.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"mlflow=={mlflow.__version__}",
                # search's package faces load their names through it.
                f"lazy_loader=={lazy_loader.__version__}",
            ],
        )
