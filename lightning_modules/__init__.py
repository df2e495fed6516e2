"""What trains: the data module and preprocessing, the networks, and the LightningModule.

Nothing here knows of studies, trials or tracking. Names load lazily (PEP 562): importing the
package, e.g. for `TabslimInputError`, must not pull in Lightning, so that `tabslim --help`
starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "TabularDataModule": "data",
    "read_table": "data",
    "BUNDLED": "datasets",
    "load_bundled": "datasets",
    "TabslimInputError": "errors",
    "MLP": "networks",
    "MLPSpec": "networks",
    "build": "networks",
    "count_parameters": "networks",
    "load": "networks",
    "Preprocessor": "preprocessing",
    "infer_task": "preprocessing",
    "StopBelowThreshold": "stopping",
    "FitResult": "training",
    "TabularModule": "training",
    "TrainConfig": "training",
    "fit": "training",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lightning_modules' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lightning_modules.{_WHERE[name]}"), name)
