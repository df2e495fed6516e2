"""What a tabslim study was made with, and what follows from it: the floor and feasibility.

The settings live on the Optuna study (one user attribute, so every worker and every later
command reads the same thing). They are written once when the study is created and once more
when the baseline finishes; a resumed run must match the comparable part.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task
from search.cluster import without_passwords
from search.config import Config
from search.study import attributes

SIZE_METRICS = {"parameters": "parameters", "bytes": "size_bytes", "flops": "flops"}
# Fields that make two runs of one study comparable; the rest is bookkeeping or results.
COMPARED = (
    "task",
    "metric",
    "higher_is_better",
    "size",
    "latency",
    "max_metric_drop",
    "baseline_hidden",
    "space",
    "approaches",
    "prune",
    "data",
    "target",
)


def latency_metric(config: Config) -> str:
    """The metric name of the latency objective, e.g. `latency_onnxruntime_b1024_median_ms`."""
    latency = config.search.latency
    return f"latency_{latency.runtime}_b{latency.batch_size}_median_ms"


@dataclass(frozen=True)
class StudySettings:
    """A study's objectives, floor and provenance.

    Args:
        metric: the task metric judged on validation rows, e.g. "accuracy" or "rmse".
        size, latency: the metric names of the second and third objectives.
        max_metric_drop: how far below the baseline a feasible trial may be: absolute for
            accuracy, a share of the baseline's error for rmse (see `allowed_drop`).
        config: the validated config, JSON-ready, so that later commands rebuild the data.
        trials_dir: where trials saved their networks.
        data_fingerprint: a digest of the split table, so that a worker or a resumed run
            refuses other data (see `check_same_data`).
        baseline_trial, baseline_metric: set once the baseline has finished.
    """

    # None in settings made without a task (a study's defaults, a test's settings).
    task: Task | None = None
    metric: str = "metric"
    higher_is_better: bool = True
    size: str = "parameters"
    latency: str = ""
    max_metric_drop: float = 0.0
    baseline_hidden: list[int] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)
    approaches: list[str] = field(default_factory=list)
    prune: dict[str, Any] | None = None
    data: str | None = None
    target: str | None = None
    config: dict[str, Any] | None = None
    trials_dir: str | None = None
    data_fingerprint: str | None = None
    baseline_trial: int | None = None
    baseline_metric: float | None = None
    # How the champion is picked ("confident" or "smallest"); may change between runs.
    champion: str = "confident"

    def __post_init__(self) -> None:
        # Stored settings hold the task's name, and "" where they had none.
        if self.task is not None and not isinstance(self.task, Task):
            object.__setattr__(self, "task", Task(self.task) if self.task else None)

    @classmethod
    def for_search(
        cls,
        config: Config,
        *,
        task: Task,
        data: str,
        target: str,
        trials_dir: str,
        data_fingerprint: str | None = None,
    ) -> StudySettings:
        """The settings a search with `config` on data of `task` gives its study."""
        search = config.search
        return cls(
            task=task,
            metric=task.metric,
            higher_is_better=task.higher_is_better,
            size=SIZE_METRICS[search.size],
            latency=latency_metric(config),
            max_metric_drop=search.max_metric_drop,
            baseline_hidden=list(config.model.group_sizes()),
            space=search.space.model_dump(),
            approaches=list(search.approaches),
            prune=search.prune.model_dump() if "prune" in search.approaches else None,
            data=data,
            target=target,
            # Stored without URL passwords: a study's attributes are readable by all its users.
            config=without_passwords(config.model_dump(mode="json")),
            trials_dir=trials_dir,
            data_fingerprint=data_fingerprint,
            champion=search.champion.value,
        )

    @classmethod
    def read(cls, study: optuna.Study) -> StudySettings:
        """The settings stored on `study`; fields a study lacks take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in attributes.settings_dict(study).items() if k in known})

    def write(self, study: optuna.Study) -> None:
        attributes.write_settings(study, self.stored())

    def stored(self) -> dict[str, Any]:
        """The settings as the study attribute holds them: JSON, the task by its name."""
        return dataclasses.asdict(self) | {"task": self.task.value if self.task else ""}

    @property
    def budget(self) -> dict[str, float | None] | None:
        """`search.budget` of the latest run ({"parameters": N, "latency_ms": T}), or None."""
        budget = ((self.config or {}).get("search") or {}).get("budget")
        return None if budget is None else dict(budget)

    def with_baseline(self, trial_number: int, metric: float) -> StudySettings:
        return dataclasses.replace(self, baseline_trial=trial_number, baseline_metric=metric)

    @property
    def objective_names(self) -> list[str]:
        """The three objectives by name, in the study's order: metric, size, latency."""
        return [f"val_{self.metric}", self.size, self.latency]

    def allowed_drop(self) -> float:
        """How far a feasible metric may fall behind the baseline's, in the metric's units.

        `max_metric_drop` is absolute for a higher-is-better metric (0.005 is half a point of
        accuracy) and relative to the baseline for an error (0.005 is 0.5% of its RMSE): an
        absolute RMSE margin would mean nothing across targets of different scales.
        """
        if self.higher_is_better or self.baseline_metric is None:
            return self.max_metric_drop
        return self.max_metric_drop * abs(self.baseline_metric)

    def floor(self) -> float | None:
        """The worst acceptable validation metric, or None before the baseline has finished.

        For a lower-is-better metric (e.g. rmse) this is a ceiling above the baseline.
        """
        if self.baseline_metric is None:
            return None
        drop = self.allowed_drop()
        return self.baseline_metric - drop if self.higher_is_better else self.baseline_metric + drop

    def violation(self, value: float) -> float:
        """Optuna's constraint value for a validation metric: <= 0 when within the floor."""
        limit = self.floor()
        if limit is None:
            return 0.0
        return limit - value if self.higher_is_better else value - limit

    def delta(self, value: float) -> float:
        """`value` minus the baseline metric, NaN before the baseline has finished."""
        return float("nan") if self.baseline_metric is None else value - self.baseline_metric

    def is_confident(self, low: float, high: float) -> bool:
        """Whether a paired interval of candidate - baseline lies wholly within the floor.

        Above -drop for a higher-is-better metric, below +drop otherwise (`allowed_drop`).
        """
        if not (math.isfinite(low) and math.isfinite(high)):
            return False
        drop = self.allowed_drop()
        return low > -drop if self.higher_is_better else high < drop

    def check_matches(self, stored: StudySettings, where: str) -> None:
        """Raise a one-line error if `stored` (an existing study) differs in a compared field.

        The message names the innermost key that differs (`space.ladder`), not the whole field.
        """
        mine, theirs = self.stored(), stored.stored()
        for key in COMPARED:
            found = _first_difference(key, theirs[key], mine[key])
            if found is not None:
                path, there, here = found
                raise TabslimInputError(
                    f"{where} was made with a different {path} ({json.dumps(there)} there, "
                    f"{json.dumps(here)} in this config); use another --study name to search "
                    "a new space"
                )


def _first_difference(path: str, there: Any, here: Any) -> tuple[str, Any, Any] | None:
    """The dotted path of the first nested value that differs, with both values, or None."""
    if isinstance(there, dict) and isinstance(here, dict):
        for key in sorted(set(there) | set(here)):
            found = _first_difference(f"{path}.{key}", there.get(key), here.get(key))
            if found is not None:
                return found
        return None
    if json.dumps(there, sort_keys=True) != json.dumps(here, sort_keys=True):
        return path, there, here
    return None


def is_feasible(trial: FrozenTrial) -> bool:
    """Within every constraint (Optuna's rule: each value <= 0); no constraint is feasible."""
    return all(v <= 0.0 for v in (trial.constraints or {}).values())


def check_same_data(settings: StudySettings, fingerprint: str, data: str, study: str) -> None:
    """Raise a one-line error when `data` differs from what `study` was made with."""
    if settings.data_fingerprint is not None and settings.data_fingerprint != fingerprint:
        raise TabslimInputError(
            f"the data {data} differs from the data study '{study}' was made with "
            f"(fingerprint {fingerprint[:12]} here, {settings.data_fingerprint[:12]} there); "
            "pass the same table, or start a new study"
        )
