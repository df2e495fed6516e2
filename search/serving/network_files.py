"""A trained network on disk: its spec and preprocessing as JSON, its weights as a tensor-only
state_dict (loaded with weights_only=True). Nothing pickles a module.

Trials, the logged MLflow model (`search.serving.logged_model`) and retraining all read and write
this one format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from lightning_modules.networks import NetworkSpec, infer, load, spec_from_dict
from lightning_modules.preprocessing import Preprocessor
from search.serving.served_model import (
    PREPROCESSOR_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    prediction_frame,
)

__all__ = [
    "PREPROCESSOR_FILE",
    "SPEC_FILE",
    "WEIGHTS_FILE",
    "load_network",
    "predict_frame",
    "save_network",
]


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
    output = infer(network, inputs["x_num"], inputs["x_cat"])
    decoded = preprocessor.decode(output, inputs["x_num"])
    return prediction_frame(decoded, preprocessor.classes)
