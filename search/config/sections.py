"""The config's sections below the top level: data, training, measure, tracking, and the search
with its space, pruning plan, latency objective and budget. Each checks its own keys and ranges;
checks that span sections live on `Config` (schema.py).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from lightning_modules.datasets import BUNDLED
from pruning.choices import CONTROL_CRITERION, CRITERIA, Schedule, check_criterion
from search.config.base import Section
from search.config.choices import ChampionRule, Precision, Runtime, Sampler, TaskChoice

Approach = Literal["scratch", "prune", "distill"]
# A study's approaches unless told: distillation is asked for by name (search.distill).
DEFAULT_APPROACHES: list[Approach] = ["scratch", "prune"]


class DataConfig(Section):
    dataset: str | None = Field(default=None, description="a bundled dataset name")
    path: str | None = Field(default=None, description="a CSV or Parquet file")
    target: str = "target"
    # anomaly only when asked: a rare positive class found by reconstruction error
    task: TaskChoice = "auto"
    # Task anomaly: recall is reported at this false-positive rate (recall_at_fpr).
    anomaly_fpr: float = Field(default=0.01, gt=0, lt=1)
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    # Rows held out from every decision, read once at the end: they certify the champion and
    # calibrate its estimators (validation early-stops and selects; test is only reported).
    # 0 certifies on validation, as before this split existed, and says so.
    certify_fraction: float = Field(default=0.15, ge=0, lt=0.5)
    seed: int = Field(default=0, ge=0)
    # Columns that are not features (identifiers and dates are left out anyway).
    drop_columns: list[str] = Field(default_factory=list)
    # Orders the rows for a split in time; never a feature.
    time_column: str | None = None
    # Train and search on a seeded sample of this many rows of a `data.path` table (in the
    # file's order, so a split in time stays one); None reads every row. For tables too large
    # to search in memory: train the chosen shape on all rows afterwards (README, Large tables).
    sample_rows: int | None = Field(default=None, ge=100)

    @model_validator(mode="after")
    def _training_rows_left(self) -> DataConfig:
        held = self.val_fraction + self.test_fraction + self.certify_fraction
        if held > 0.7:
            raise ValueError(
                "data.val_fraction + test_fraction + certify_fraction must leave at least 30% "
                f"of the rows to train on, but got {held:.2f}"
            )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of data.dataset (bundled) or data.path (a file)")
        if self.dataset is not None and self.sample_rows is not None:
            raise ValueError("data.sample_rows samples a data.path table, not a bundled dataset")
        if self.dataset is not None and self.dataset not in BUNDLED:
            raise ValueError(
                f"data.dataset must be one of {sorted(BUNDLED)}, but got {self.dataset!r}"
            )
        return self


class TrainingConfig(Section):
    max_epochs: int = Field(default=40, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=8, ge=1)
    seed: int = Field(default=0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    # Lightning's training precision: 32, or bf16-mixed (bfloat16 autocast, float32 weights;
    # for a GPU that has bfloat16).
    precision: Literal["32", "bf16-mixed"] = "32"
    # CPU threads per training process; 0 means all cores (split among search workers).
    threads: int = Field(default=1, ge=0)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as a number; Lightning's name for it is the text "32".
        return "32" if value == 32 and not isinstance(value, bool) else value


class MeasureConfig(Section):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 1024], min_length=1)
    runtimes: list[Runtime] = Field(default_factory=lambda: list(get_args(Runtime)), min_length=1)
    threads: int = Field(default=1, ge=1)
    # After a search, the baseline and the champion as a user calls them, side by side in the
    # report: in_process (MLflow's pyfunc), http (also `mlflow models serve`, which starts a
    # server per model, 5-20 s each), or off.
    served: Literal["off", "in_process", "http"] = "in_process"

    @model_validator(mode="after")
    def _check(self) -> MeasureConfig:
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"measure.batch_sizes must be at least 1, but got {self.batch_sizes}")
        return self


# MLflow's store when no config or flag names one: SQLite under mlruns/ (see search.tracking).
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


class TrackingConfig(Section):
    uri: str = DEFAULT_TRACKING_URI
    experiment: str = Field(default="tabslim", min_length=1)
    # A seeded sample of training rows stored with each logged model, for `tabslim retrain
    # --reference-share` (0 stores none: the model then holds no row of the training data).
    reference_rows: int = Field(default=2000, ge=0)


class Range(Section):
    """Bounds of one searched number; `step` for a grid, `log` for a log scale (not both)."""

    low: float
    high: float
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"bounds reversed: low={self.low} is above high={self.high}")
        if self.log and self.step is not None:
            raise ValueError("a range takes step or log, not both")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={self.low}")
        return self


# Widening is allowed up to this factor; the point of the search is shrinking.
MAX_MULTIPLIER = 4.0


def _check_multiplier(where: str, bounds: Range) -> None:
    if bounds.low <= 0:
        raise ValueError(f"{where}: a width multiplier must be above 0, but got low={bounds.low}")
    if bounds.high > MAX_MULTIPLIER:
        raise ValueError(
            f"{where}: a width multiplier must be at most {MAX_MULTIPLIER}, "
            f"but got high={bounds.high}"
        )


Scheme = Literal["scale_shape", "per_layer"]


class SpaceConfig(Section):
    """How a candidate's widths are drawn.

    `scale_shape` (default) draws one overall width scale on a log scale and a shape factor per
    layer, and both approaches share them (a prune trial keeps that share of each layer), so a
    sampler learns from scratch and prune trials alike. Drawing each layer's multiplier
    uniformly instead (`per_layer`, with `multiplier` steps) puts 0.3% of the space where every
    layer is under 0.15x, so few trials ever try the small networks.
    """

    scheme: Scheme = "scale_shape"
    scale: Range = Field(default_factory=lambda: Range(low=0.02, high=1.0, log=True))
    shape: Range = Field(default_factory=lambda: Range(low=0.5, high=2.0, log=True))
    # Uniform shapes (every layer times this) trained from scratch first, after the baseline.
    ladder: list[float] = Field(default_factory=lambda: [0.5, 0.25, 0.125, 0.0625, 0.03125])
    # per_layer: each layer's draw range; scale_shape: the bounds each multiplier is clipped to.
    multiplier: Range = Field(default_factory=lambda: Range(low=0.02, high=1.0, log=True))
    # Per hidden layer, first to last; overrides `multiplier` for the layers it covers.
    layers: list[Range] = Field(default_factory=list)
    remove_layers: bool = False
    width_multiple: int = Field(default=8, ge=1)
    lr: Range | None = None
    weight_decay: Range | None = None
    dropout: Range | None = None

    @model_validator(mode="after")
    def _check(self) -> SpaceConfig:
        _check_multiplier("search.space.multiplier", self.multiplier)
        _check_multiplier("search.space.scale", self.scale)
        if self.shape.low <= 0 or self.shape.low > 1 or self.shape.high < 1:
            raise ValueError(
                "search.space.shape must contain 1 (the uniform shape) and be above 0, but got "
                f"[{self.shape.low}, {self.shape.high}]"
            )
        outside = [m for m in self.ladder if not self.scale.low <= m <= self.scale.high]
        if outside:
            raise ValueError(
                f"search.space.ladder value {outside[0]} lies outside search.space.scale "
                f"[{self.scale.low}, {self.scale.high}]"
            )
        for i, bounds in enumerate(self.layers):
            _check_multiplier(f"search.space.layers.{i}", bounds)
        for name in ("lr", "weight_decay"):
            bounds = getattr(self, name)
            if bounds is not None and bounds.low < 0:
                raise ValueError(f"search.space.{name} must be >= 0, but got low={bounds.low}")
        if self.dropout is not None and not (self.dropout.low >= 0 and self.dropout.high < 1):
            raise ValueError(
                f"search.space.dropout must lie in [0, 1), but got "
                f"[{self.dropout.low}, {self.dropout.high}]"
            )
        return self


class PruneConfig(Section):
    """The space of pruning plans for `prune` trials (the second approach)."""

    keep_ratio: Range = Field(default_factory=lambda: Range(low=0.05, high=1.0, step=0.05))
    criteria: list[str] = Field(
        default_factory=lambda: [c for c in CRITERIA if c != CONTROL_CRITERION], min_length=1
    )
    schedules: list[Schedule] = Field(
        default_factory=lambda: list(get_args(Schedule)), min_length=1
    )
    fine_tune_epochs: list[int] = Field(default_factory=lambda: [0, 1, 2, 4, 8], min_length=1)
    # Epochs of fine-tuning between layers in an iterative plan.
    step_epochs: int = Field(default=1, ge=0)
    # A fixed order of the prunable groups, by index or name (e.g. [token, block0.ffn, ...]),
    # or null to search it. Names are resolved to indices when the config is read.
    order: list[int | str] | None = None

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        for name in self.criteria:
            check_criterion(name)
        ratio = self.keep_ratio
        if not (ratio.low > 0 and ratio.high <= 1):
            raise ValueError(
                f"search.prune.keep_ratio must lie in (0, 1], but got [{ratio.low}, {ratio.high}]"
            )
        if any(e < 0 for e in self.fine_tune_epochs):
            raise ValueError(
                f"search.prune.fine_tune_epochs must be 0 or more, but got {self.fine_tune_epochs}"
            )
        return self


class FidelityConfig(Section):
    """`search.fidelity`: candidates train in rungs of min_epochs x reduction^k epochs, and
    only the better 1/reduction of each rung goes on (search/study/fidelity.py)."""

    min_epochs: int = Field(default=3, ge=1)
    reduction: int = Field(default=3, ge=2)


class DistillConfig(Section):
    """`search.distill`: how a `distill` trial learns from the baseline's outputs.

    The loss is (1 - weight) x the task's loss + weight x the distance to the teacher: the KL
    divergence between probabilities softened by `temperature` (times temperature^2, so its
    gradients keep their scale) for classification, the squared error to the teacher's output
    for regression and for an autoencoder's reconstruction.
    """

    weight: float = Field(default=0.7, ge=0.0, le=1.0)
    temperature: float = Field(default=2.0, gt=0.0, le=20.0)
    # Epochs as for a scratch trial (training.max_epochs) unless set.
    max_epochs: int | None = Field(default=None, ge=1)


SizeObjective = Literal["parameters", "bytes", "flops"]


class LatencyObjective(Section):
    runtime: Runtime = "onnxruntime"
    batch_size: int = Field(default=1024, ge=1)
    # Timing budget per trial: a trial times only this latency, so that measuring stays small
    # beside training (bench/trial_overhead.py); `tabslim train` times every measure setting.
    seconds: float = Field(default=0.05, gt=0, le=10)


class Budget(Section):
    """`search.champion: within_budget`: the limits a champion must meet (either or both)."""

    # Parameters of the network, and the latency objective's median ms per batch of
    # search.latency.batch_size rows.
    parameters: int | None = Field(default=None, ge=1)
    latency_ms: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.parameters is None and self.latency_ms is None:
            raise ValueError("search.budget: expected parameters, latency_ms or both")
        return self


class SearchConfig(Section):
    study: str | None = Field(default=None, min_length=1, description="default: tabslim-<data>")
    n_trials: int = Field(default=30, ge=1, description="trials the study should have in all")
    timeout: float | None = Field(default=None, gt=0, description="seconds for this run")
    sampler: Sampler = "tpe"
    seed: int = Field(default=0, ge=0)
    storage: str | None = Field(default=None, description="default: mlruns/optuna.journal")
    workers: int = Field(default=1, ge=1)
    # A trial whose process died (kill -9, a lost node) is failed and queued again this often.
    max_retries: int = Field(default=2, ge=0)
    # auto, cpu, or GPU indices like "0,1": each worker process gets one (search.devices)
    devices: str = Field(default="auto", pattern=r"^(auto|cpu|\d+(,\d+)*)$")
    workers_per_device: int | None = Field(default=None, ge=1)
    size: SizeObjective = "parameters"
    latency: LatencyObjective = Field(default_factory=LatencyObjective)
    # Accuracy: absolute, 0.005 is half a point. RMSE: relative, 0.005 is 0.5% of the baseline's.
    max_metric_drop: float = Field(default=0.005, ge=0)
    keep_models: Literal["pareto", "all"] = "pareto"
    # confident: the smallest candidate whose confirmed 95% interval lies within the floor (the
    # baseline when none does); smallest: the smallest whose validation point estimate does
    # (uncertified); within_budget: the most accurate candidate within search.budget.
    # Not strict: a YAML string names the rule.
    champion: ChampionRule = Field(default=ChampionRule.CONFIDENT, strict=False)
    budget: Budget | None = None
    # How the champion is certified (search/front/confirm.py): 0 on the held-out certification
    # rows (data.certify_fraction); K by K folds of the training and validation rows, which
    # certify the recipe; auto: the certification rows, or 5 folds where those rows are too few
    # to certify the floor and folds are expected to.
    confirm: int | Literal["auto"] = "auto"
    confirm_by: Literal["folds"] | None = None  # K always means folds; kept for old configs
    # At most this many candidates are trained in folds (search/front/confirm.py).
    confirm_limit: int = Field(default=10, ge=1)
    # A scratch trial still improving at training.max_epochs trains on, in warm-restarted
    # cosine cycles, up to this many times max_epochs (1: it stops at the cap).
    max_epochs_factor: float = Field(default=3.0, ge=1.0, le=20.0)
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    approaches: list[Approach] = Field(
        default_factory=lambda: list(DEFAULT_APPROACHES), min_length=1
    )
    # Multi-fidelity: train in rungs and stop the worse shapes early (null: every candidate
    # trains in full).
    fidelity: FidelityConfig | None = None
    distill: DistillConfig = Field(default_factory=DistillConfig)
    # Re-train pruned front members from scratch at identical widths, for the paper's comparison.
    paired: bool = False
    # INT8 copies of every fp32 front member, measured and added to the front (front/quantized.py)
    quantize: list[Precision] = Field(default_factory=lambda: list(get_args(Precision)))
    prune: PruneConfig = Field(default_factory=PruneConfig)

    @field_validator("confirm_by", mode="before")
    @classmethod
    def _no_seeds(cls, value: Any) -> Any:
        if value == "seeds":
            raise ValueError(
                "search.confirm_by: seeds was removed (it judged candidates again on the rows "
                "that selected them); candidates are now certified on held-out rows "
                "(data.certify_fraction), or by folds with confirm_by: folds"
            )
        return value

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_runs(cls, value: Any) -> Any:
        # One message for the union, instead of one per member.
        runs = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 20
        if value != "auto" and not runs:
            raise ValueError(
                f"search.confirm: expected auto or a number of runs from 0 to 20, but got {value!r}"
            )
        return value
