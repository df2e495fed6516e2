"""The one YAML config, validated once where it enters.

Unknown keys and values of the wrong type or out of range are rejected with one line that names
the key, the expected value and the value given. CLI flags override fields after loading and are
validated the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lightning_modules.datasets import BUNDLED
from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import ACTIVATIONS

Runtime = Literal["torch", "onnxruntime"]
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class _Section(BaseModel):
    # strict: YAML already gives typed values, so "10" for an int is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class DataConfig(_Section):
    dataset: str | None = Field(default=None, description="a bundled dataset name")
    path: str | None = Field(default=None, description="a CSV or Parquet file")
    target: str = "target"
    task: Literal["auto", "classification", "binary", "multiclass", "regression"] = "auto"
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of data.dataset (bundled) or data.path (a file)")
        if self.dataset is not None and self.dataset not in BUNDLED:
            raise ValueError(
                f"data.dataset must be one of {sorted(BUNDLED)}, but got {self.dataset!r}"
            )
        return self


class ModelConfig(_Section):
    hidden: list[int] = Field(default_factory=lambda: [256, 256, 128], min_length=1)
    d_embedding: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    activation: str = "relu"
    batch_norm: bool = True

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"model.hidden widths must be at least 1, but got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {sorted(ACTIVATIONS)}, "
                f"but got {self.activation!r}"
            )
        return self


class TrainingConfig(_Section):
    max_epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=8, ge=1)
    seed: int = Field(default=0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"


class MeasureConfig(_Section):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 1024], min_length=1)
    runtimes: list[Runtime] = Field(default_factory=lambda: list(get_args(Runtime)), min_length=1)
    threads: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> MeasureConfig:
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"measure.batch_sizes must be at least 1, but got {self.batch_sizes}")
        return self


class TrackingConfig(_Section):
    uri: str = "sqlite:///mlruns/mlflow.db"
    experiment: str = Field(default="tabslim", min_length=1)


class Config(_Section):
    data: DataConfig = Field(default_factory=lambda: DataConfig(dataset="digits"))
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in {"value_error", "assertion_error"}:
        return message
    value = error.get("input")
    if isinstance(value, dict | list) and len(repr(value)) > 60:
        return f"{where}: {message.lower()}"
    return f"{where}: {message.lower()}, but got {value!r}"


def _expected_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where an unknown key was found, to show in the message."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def validate(raw: Any, source: str) -> Config:
    """A Config from parsed YAML, or a one-line TabslimInputError naming `source`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TabslimInputError(
            f"config {source} must be a mapping of sections, but got {type(raw).__name__}"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        message = _describe(dict(first))
        if first["type"] == "extra_forbidden":
            message += f"; expected one of {_expected_keys(Config, first['loc'])}"
        raise TabslimInputError(f"config {source}: {message}") from None


def load_config(path: str | Path | None = None) -> Config:
    """The config in `path` (default: configs/default.yaml), validated."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise TabslimInputError(f"config file '{path}' does not exist (expected a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TabslimInputError(f"config '{path}' is not valid YAML{where}") from None
    return validate(raw, f"'{path}'")


def override(config: Config, source: str, **changes: Any) -> Config:
    """A copy of `config` with dotted keys changed (`data.path=...`), validated again."""
    raw = config.model_dump()
    for dotted, value in changes.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        raw[section][key] = value
        if dotted == "data.path":
            raw["data"]["dataset"] = None
        if dotted == "data.dataset":
            raw["data"]["path"] = None
    return validate(raw, source)
