"""What the study's MLflow runs hold, field by field: a trial's params and its rung tags, and
the champion's metrics on the parent run (`search.tracking.study_mirror` writes them)."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import RunTag
from optuna.trial import FrozenTrial

from search.study import attributes

__all__ = ["champion_metrics", "rung_tags", "trial_params"]


def trial_params(trial: FrozenTrial) -> dict[str, str]:
    # Floats from a step grid print as 0.15000000000000002; six digits read better.
    params = {k: f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in trial.params.items()}
    params["approach"] = attributes.approach(trial)
    params["precision"] = attributes.precision_label(trial)
    source = attributes.variant_of(trial)
    if source is not None:
        params["variant_of"] = str(source)
    params["widths"] = attributes.widths_text(trial)
    # What an adaptive schedule chose by itself: kept widths, steps accepted and rolled back.
    for key, value in attributes.prune_details(trial).items():
        listed = isinstance(value, list)
        params[f"prune.{key}"] = "-".join(map(str, value)) if listed else str(value)
    return params


def champion_metrics(chosen: pd.Series, metric: str) -> dict[str, float]:
    """The champion's row of the trial table, as the parent run's `champion_*` metrics."""
    return {
        "champion_trial": float(chosen["trial"]),
        "champion_param_ratio": float(chosen["param_ratio"]),
        "champion_latency_ratio": float(chosen["latency_ratio"]),
        f"champion_val_{metric}": float(chosen["metric"]),
        f"champion_test_{metric}": float(chosen["test_metric"]),
        "champion_val_delta_ci_low": float(chosen["delta_low"]),
        "champion_val_delta_ci_high": float(chosen["delta_high"]),
        "champion_test_delta": float(chosen["test_delta"]),
        "champion_test_delta_ci_low": float(chosen["test_delta_low"]),
        "champion_test_delta_ci_high": float(chosen["test_delta_high"]),
    }


def rung_tags(trial: FrozenTrial) -> list[RunTag]:
    """Where a multi-fidelity search stopped the trial, and why; "no" when it trained in full."""
    stop = attributes.rung_stop(trial)
    if stop is None:
        return [RunTag("tabslim.stopped_at_rung", "no")] if attributes.rung_records(trial) else []
    return [
        RunTag("tabslim.stopped_at_rung", f"{stop['rung']} ({stop['epochs']} epochs)"),
        RunTag("tabslim.rung_reason", str(stop["reason"])[:5000]),
    ]
