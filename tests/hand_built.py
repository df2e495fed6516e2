"""Studies built by hand with `optuna.trial.create_trial`, for tests of the front and its
hypervolume: a baseline, trials with three objectives, and the floor as Optuna's constraint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.study import StudyDirection

from search.study import StudySettings

ACCURACY = {
    "task": "multiclass",
    "metric": "accuracy",
    "higher_is_better": True,
    "size": "parameters",
    "latency": "latency_onnxruntime_b1024_median_ms",
    "max_metric_drop": 0.005,
    "baseline_trial": 0,
    "baseline_metric": 0.97,
}
RMSE = {
    "task": "regression",
    "metric": "rmse",
    "higher_is_better": False,
    "size": "size_bytes",
    "latency": "latency_onnxruntime_b1024_median_ms",
    "max_metric_drop": 0.05,  # relative for rmse: 5% of the baseline's 10.0, so 0.5
    "baseline_trial": 0,
    "baseline_metric": 10.0,
}


def new_study(settings: dict[str, Any]) -> optuna.Study:
    minimize = StudyDirection.MINIMIZE
    metric = StudyDirection.MAXIMIZE if settings["higher_is_better"] else minimize
    study = optuna.create_study(directions=[metric, minimize, minimize])
    study.set_user_attr("tabslim", settings)
    return study


def add_trial(
    study: optuna.Study,
    metric: float,
    size: float,
    latency: float,
    *,
    approach: str = "scratch",
    hidden: Sequence[int] = (64, 32),
    baseline: bool = False,
    metrics: dict[str, float] | None = None,
    constraint: float | None = None,
    repeat_of: int | None = None,
) -> None:
    """Add a COMPLETE trial whose constraint is computed as the objective does, from the floor."""
    if constraint is None:
        constraint = StudySettings.read(study).violation(metric)
    user_attrs: dict[str, Any] = {
        "approach": approach,
        "hidden": list(hidden),
        "metrics": {"parameters": size} if metrics is None else metrics,
    }
    if baseline:
        user_attrs["baseline"] = True
    if repeat_of is not None:
        user_attrs["repeat_of"] = repeat_of
    study.add_trial(
        optuna.trial.create_trial(
            values=[metric, size, latency],
            user_attrs=user_attrs,
            constraints={"metric_floor": constraint},
        )
    )


def accuracy_study() -> optuna.Study:
    """Baseline 0; 1 and 4 on the front; 2 infeasible; 3 dominated by 1; baseline dominated by 4."""
    study = new_study(ACCURACY)
    add_trial(study, 0.970, 10_000, 2.0, hidden=(256, 128), baseline=True)
    add_trial(
        study,
        0.968,
        2_500,
        1.0,
        hidden=(64, 32),
        metrics={"parameters": 2_500, "test_accuracy": 0.961},
    )
    add_trial(study, 0.960, 1_000, 0.8, approach="prune", hidden=(32, 16))
    add_trial(study, 0.966, 5_000, 1.5, hidden=(128, 32))
    add_trial(study, 0.972, 6_000, 1.8, approach="prune", hidden=(128, 64))
    return study
