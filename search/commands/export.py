"""`tabslim export`: a logged tabslim model as one self-contained ONNX file.

The file is the served graph (`search.measure.served_graph`): raw columns in, one input per
column; the prediction, then the class probabilities or the anomaly score, out. It runs in ONNX
Runtime from any language, without Python, torch or tabslim. A model logged before the served
graph existed is composed here from the network's graph and its fitted preprocessing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import onnx

from lightning_modules.errors import TabslimInputError
from lightning_modules.preprocessing import Preprocessor
from search.commands.models import network_folder
from search.measure import compose
from search.serving import PREPROCESSOR_FILE, SERVED_FILE

__all__ = ["ExportOutcome", "run_export"]

# The network's own graph in a model folder (`search.serving.served_model.ONNX_FILE`).
_NETWORK_GRAPH = "model.onnx"


@dataclass(frozen=True)
class ExportOutcome:
    path: Path
    inputs: dict[str, str]
    outputs: list[str]
    composed: bool  # True: the model predates the served graph, which was built here


def _network_dir(model_uri: str, tracking_uri: str) -> Path:
    mlflow.set_tracking_uri(tracking_uri)
    directory = network_folder(model_uri, tracking_uri)
    if not (directory / PREPROCESSOR_FILE).is_file() or not (
        (directory / SERVED_FILE).is_file() or (directory / _NETWORK_GRAPH).is_file()
    ):
        raise TabslimInputError(
            f"{model_uri} is not a tabslim model: it has no artifacts/network/{PREPROCESSOR_FILE} "
            f"with an ONNX graph beside it"
        )
    return directory


def run_export(model_uri: str, out: str | Path, *, tracking_uri: str) -> ExportOutcome:
    """Write the served graph of `model_uri` to `out`."""
    out = Path(out)
    if out.is_dir():
        raise TabslimInputError(f"--out must be a file path, but got the folder {str(out)!r}")
    directory = _network_dir(model_uri, tracking_uri)
    out.parent.mkdir(parents=True, exist_ok=True)
    composed = not (directory / SERVED_FILE).is_file()
    if composed:
        preprocessor = Preprocessor.from_dict(
            json.loads((directory / PREPROCESSOR_FILE).read_text())
        )
        onnx.save(compose(directory / _NETWORK_GRAPH, preprocessor), str(out))
    else:
        shutil.copyfile(directory / SERVED_FILE, out)
    graph = onnx.load(str(out), load_external_data=False).graph
    inputs = {i.name: onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()
              for i in graph.input}  # fmt: skip
    return ExportOutcome(out, inputs, [o.name for o in graph.output], composed)
