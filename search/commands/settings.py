"""Each command's settings, validated once, with every default written here and only here.

The parser (`search.commands.cli`) shows these defaults and the runs take them, so the two
cannot disagree. Bad values end as one line, as the config's do. This module imports neither
torch, MLflow nor Optuna: `tabslim --help` builds its parser from it.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from typing_extensions import Self

from lightning_modules.errors import TabslimInputError
from pruning.choices import DEFAULT_CRITERION, DEFAULT_EPOCHS, DEFAULT_RATIOS
from search.config.base import describe_error
from search.config.choices import DRIFT_ALPHA, DRIFT_PSI_THRESHOLD

__all__ = [
    "DataSettings",
    "DriftSettings",
    "RetrainSettings",
    "SearchSettings",
    "SensitivitySettings",
    "WorkerSettings",
    "listed",
]


def listed(values: tuple[float, ...] | list[float]) -> str:
    """Numbers as the CLI takes them: comma-separated, without trailing zeros."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


class Settings(BaseModel):
    """A command's settings: built from keyword arguments or from parsed flags, checked once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, **values: Any) -> Self:
        """The settings from `values`; a bad one raises a one-line `TabslimInputError`."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise TabslimInputError(describe_error(dict(error.errors()[0]))) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace, **renamed: str) -> Self:
        """The settings from parsed flags; `renamed` maps a field to its flag's `dest`."""
        values = {name: getattr(args, renamed.get(name, name)) for name in cls.model_fields}
        # A flag left out parses as None: the setting keeps its default.
        return cls.of(**{name: value for name, value in values.items() if value is not None})


class DataSettings(Settings):
    """What `train` and `search` take beside the config: overrides of its data, training and
    tracking sections (None: the config's value)."""

    config: str | None = None
    data: str | None = None
    dataset: str | None = None
    target: str | None = None
    task: str | None = None
    drop_columns: str | None = None
    time_column: str | None = None
    sample_rows: int | None = None
    seed: int | None = None
    max_epochs: int | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False

    def overrides(self) -> dict[str, Any]:
        """The config fields these flags set, by dotted name."""
        columns = [c for c in self.drop_columns.split(",") if c] if self.drop_columns else None
        return {
            "data.path": self.data,
            "data.dataset": self.dataset,
            "data.target": self.target,
            "data.task": self.task,
            "data.drop_columns": columns,
            "data.time_column": self.time_column,
            "data.sample_rows": self.sample_rows,
            "data.seed": self.seed,
            "training.seed": self.seed,
            "training.max_epochs": self.max_epochs,
            "tracking.uri": self.tracking_uri,
            "tracking.experiment": self.experiment,
        }


class SearchSettings(DataSettings):
    n_trials: int | None = None
    timeout: float | None = None
    study: str | None = None
    storage: str | None = None
    workers: int | None = None
    devices: str | None = None
    workers_per_device: int | None = None
    sampler: str | None = None
    # Move <study>@champion even off a version `tabslim retrain` promoted.
    force: bool = False

    def search_overrides(self) -> dict[str, Any]:
        return {
            "search.n_trials": self.n_trials,
            "search.timeout": self.timeout,
            "search.study": self.study,
            "search.storage": self.storage,
            "search.workers": self.workers,
            "search.devices": self.devices,
            "search.workers_per_device": self.workers_per_device,
            "search.seed": self.seed,
            "search.sampler": self.sampler,
        }


class WorkerSettings(Settings):
    study: str
    storage: str | None = None
    tracking_uri: str | None = None
    data: str | None = None
    devices: str = "auto"
    workers_per_device: int | None = None


class DriftSettings(Settings):
    tracking_uri: str | None = None
    psi_threshold: float = DRIFT_PSI_THRESHOLD
    alpha: float = DRIFT_ALPHA
    # A table holding the target of each row of --data, in order; None: the labels --data has.
    labels: str | None = None


class SensitivitySettings(Settings):
    ratios: str = listed(DEFAULT_RATIOS)
    criterion: str = DEFAULT_CRITERION
    epochs: str = listed(DEFAULT_EPOCHS)
    tracking_uri: str | None = None

    def lists(self) -> tuple[list[float], list[int]]:
        """The ratios and the fine-tuning epochs, parsed."""
        try:
            ratios = [float(part) for part in self.ratios.split(",")]
            epochs = [int(part) for part in self.epochs.split(",")]
        except ValueError:
            raise TabslimInputError(
                "--ratios and --epochs take comma-separated numbers (like 0.25,0.5 and 0,1), "
                f"but got --ratios {self.ratios!r} --epochs {self.epochs!r}"
            ) from None
        return ratios, epochs


class RetrainSettings(Settings):
    """How `tabslim retrain` decides and trains; the flags' names are in the messages."""

    tracking_uri: str | None = None
    time_column: str | None = None
    config_path: str | None = None
    dry_run: bool = False
    force: bool = False
    holdout: float = 0.3
    min_gain: float = 0.0
    tolerance: float = 0.01
    drift_threshold: float = 0.1
    reference_share: float = 0.0
    search_trials: int = 0
    # The training flags `train` has; None: the config's.
    experiment: str | None = None
    max_epochs: int | None = None
    seed: int | None = None

    def training_config(self) -> Any:
        """The config (`config_path`, else the default) with the training flags applied."""
        from search.config import load_config, override

        return override(
            load_config(self.config_path),
            "from the command line",
            **{
                "tracking.experiment": self.experiment,
                "training.max_epochs": self.max_epochs,
                "training.seed": self.seed,
                "data.seed": self.seed,
            },
        )

    @model_validator(mode="after")
    def _check(self) -> RetrainSettings:
        holdout, tolerance, drift_threshold = self.holdout, self.tolerance, self.drift_threshold
        if not (0.05 <= holdout <= 0.8 and tolerance >= 0 and drift_threshold > 0):
            raise ValueError(
                f"--holdout must be in [0.05, 0.8], --tolerance at least 0 and --drift-threshold "
                f"above 0, but got {holdout=}, {tolerance=}, {drift_threshold=}"
            )
        reference_share, search_trials = self.reference_share, self.search_trials
        if not (0 <= reference_share <= 1 and 0 <= search_trials <= 200):
            raise ValueError(
                f"--reference-share must be in [0, 1] and --search in [0, 200], but got "
                f"{reference_share=}, {search_trials=}"
            )
        return self
