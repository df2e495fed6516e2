"""What trains: the data module and preprocessing, the networks, and the LightningModule.

Nothing here knows of studies, trials or tracking.
"""

from __future__ import annotations

from lightning_modules.data import TabularDataModule, read_table
from lightning_modules.datasets import BUNDLED, load_bundled
from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLP, MLPSpec, build, count_parameters, load
from lightning_modules.preprocessing import Preprocessor, infer_task
from lightning_modules.training import FitResult, TabularModule, TrainConfig, fit

__all__ = [
    "BUNDLED",
    "MLP",
    "FitResult",
    "MLPSpec",
    "Preprocessor",
    "TabslimInputError",
    "TabularDataModule",
    "TabularModule",
    "TrainConfig",
    "build",
    "count_parameters",
    "fit",
    "infer_task",
    "load",
    "load_bundled",
    "read_table",
]
