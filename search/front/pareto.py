"""The Pareto front of a tabslim study: front, recommendation, and the table of trials.

A tabslim study has directions `[metric, size, latency]` (metric maximised or minimised, the
other two minimised), `StudySettings` with the baseline and the allowed metric drop, and trials
that carry `"approach"`, `"hidden"`, `"metrics"` (and `"baseline"` for the baseline) user
attributes plus a `"metric_floor"` constraint. Plots live in
`search.front.plots`, the text report in `search.front.report`, the champion in
`search.front.champion` and the hypervolume in `search.front.hypervolume`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.study import StudySettings, attributes, fully_trained, is_feasible

__all__ = [
    "TABLE_COLUMNS",
    "baseline_trial",
    "complete_trials",
    "front",
    "metric_floor",
    "recommend",
    "trial_table",
    "validation_half_width",
]

TABLE_COLUMNS: tuple[str, ...] = (
    "trial",
    "approach",
    "precision",
    "baseline",
    "hidden",
    "metric",
    "metric_delta",
    "test_metric",
    "size",
    "size_ratio",
    "parameters",
    "param_ratio",
    "latency_ms",
    "latency_ratio",
    "delta_low",
    "delta_high",
    "test_delta",
    "test_delta_low",
    "test_delta_high",
    "feasible",
    "confident",
    "pareto",
    # Epochs a multi-fidelity search trained it before stopping it at a rung (NaN: in full).
    "stopped_epochs",
)
_TEXT_COLUMNS = ("approach", "precision", "hidden")
_BOOL_COLUMNS = ("baseline", "feasible", "confident", "pareto")
_DTYPES: dict[str, str] = (
    dict.fromkeys(TABLE_COLUMNS, "float64")
    | {"trial": "int64"}
    | dict.fromkeys(_TEXT_COLUMNS, "str")
    | dict.fromkeys(_BOOL_COLUMNS, "bool")
)
# Positions in `FrozenTrial.values`, fixed by the study's directions.
METRIC, SIZE, LATENCY = 0, 1, 2
_NAN = float("nan")


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front of fully trained trials, smallest first (ties: faster, then
    better metric)."""
    # Optuna drops infeasible trials here as soon as any trial in the study has a constraint.
    # A repeat of an earlier sample carries that trial's values; it is the same model, so only
    # the original stands on the front. A trial stopped at a rung of a multi-fidelity search is
    # unfinished: it stays out (and can dominate no finished one, being worse than it would be).
    members = [t for t in _best_trials(study) if not attributes.is_repeat(t) and fully_trained(t)]
    return sorted(members, key=_order_key(higher_is_better(study)))


def _best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """`study.best_trials` over fully trained trials only: the feasible ones that no other
    feasible, fully trained trial dominates."""
    if not any(not fully_trained(t) for t in complete_trials(study)):
        return study.best_trials
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    pool = [t for t in complete_trials(study) if fully_trained(t) and is_feasible(t)]
    keys = [[sign * v for sign, v in zip(signs, t.values, strict=True)] for t in pool]

    def dominated(i: int) -> bool:
        return any(
            all(a <= b for a, b in zip(other, keys[i], strict=True)) and other != keys[i]
            for other in keys
        )

    return [t for i, t in enumerate(pool) if not dominated(i)]


def recommend(study: optuna.Study) -> FrozenTrial | None:
    """The smallest feasible trial (ties: lower latency, then better metric), or None."""
    feasible = [t for t in complete_trials(study) if is_feasible(t) and fully_trained(t)]
    if not feasible:
        return None
    # The lexicographic minimum of a set is never dominated within it, so this is on the front.
    return min(feasible, key=_order_key(higher_is_better(study)))


def validation_half_width(table: pd.DataFrame) -> float | None:
    """The median half-width of the non-baseline trials' paired 95% validation intervals in
    `trial_table`'s output, or None when no trial has one: how finely validation resolves."""
    others = table[~table["baseline"]]
    widths = ((others["delta_high"] - others["delta_low"]) / 2).dropna()
    return None if widths.empty else float(widths.median())


def _is_confident(trial: FrozenTrial, settings: StudySettings) -> bool:
    metrics = attributes.trial_metrics(trial)
    low, high = metrics.get("val_delta_ci_low"), metrics.get("val_delta_ci_high")
    return low is not None and high is not None and settings.is_confident(low, high)


def metric_floor(study: optuna.Study) -> float | None:
    """The worst acceptable validation metric, or None while the baseline metric is unknown."""
    return StudySettings.read(study).floor()


def trial_table(study: optuna.Study) -> pd.DataFrame:
    """One row per COMPLETE trial, with `TABLE_COLUMNS`, sorted by size.

    `metric_delta` is candidate minus baseline metric (negative is worse for accuracy, better
    for rmse). Ratios are candidate / baseline and NaN while no baseline has finished.
    """
    settings = StudySettings.read(study)
    trials = complete_trials(study)
    base = baseline_trial(study, trials)
    base_size, base_latency, base_params = (
        (base.values[SIZE], base.values[LATENCY], _parameters(base))
        if base is not None
        else (_NAN, _NAN, _NAN)
    )
    on_front = {t.number for t in front(study)}
    test_key = f"test_{settings.metric}"
    rows: list[dict[str, Any]] = []
    for t in trials:
        metrics = attributes.trial_metrics(t)
        parameters = _parameters(t)
        rows.append(
            {
                "trial": t.number,
                "approach": attributes.approach(t),
                "precision": attributes.precision_label(t),
                "baseline": base is not None and t.number == base.number,
                "hidden": attributes.widths_text(t),
                "metric": t.values[METRIC],
                "metric_delta": settings.delta(t.values[METRIC]),
                "test_metric": float(metrics.get(test_key, _NAN)),
                "size": t.values[SIZE],
                "size_ratio": ratio(t.values[SIZE], base_size),
                "parameters": parameters,
                "param_ratio": ratio(parameters, base_params),
                "latency_ms": t.values[LATENCY],
                "latency_ratio": ratio(t.values[LATENCY], base_latency),
                "delta_low": float(metrics.get("val_delta_ci_low", _NAN)),
                "delta_high": float(metrics.get("val_delta_ci_high", _NAN)),
                "test_delta": float(metrics.get("test_delta", _NAN)),
                "test_delta_low": float(metrics.get("test_delta_ci_low", _NAN)),
                "test_delta_high": float(metrics.get("test_delta_ci_high", _NAN)),
                "feasible": is_feasible(t),
                "confident": _is_confident(t, settings),
                "pareto": t.number in on_front,
                "stopped_epochs": float((attributes.rung_stop(t) or {}).get("epochs", _NAN)),
            }
        )
    # Explicit dtypes keep an empty table filterable: an empty object column used as a mask
    # would be read as a list of column names.
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).astype(_DTYPES)
    return table.sort_values(["size", "latency_ms", "trial"], kind="stable").reset_index(drop=True)


def higher_is_better(study: optuna.Study) -> bool:
    # The direction is what Optuna optimises and what best_trials uses.
    return study.directions[METRIC] == StudyDirection.MAXIMIZE


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def baseline_trial(study: optuna.Study, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The finished baseline among `trials`, or None."""
    number = StudySettings.read(study).baseline_trial
    if number is not None:
        return next((t for t in trials if t.number == int(number)), None)
    # The settings learn the baseline when it finishes; until then, its own flag.
    return next((t for t in trials if attributes.is_baseline(t)), None)


def ratio(value: float, reference: float) -> float:
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return _NAN
    return value / reference


def _parameters(trial: FrozenTrial) -> float:
    metrics = attributes.trial_metrics(trial)
    return float(metrics.get("parameters", _NAN))


def _order_key(higher: bool) -> Callable[[FrozenTrial], tuple[float, float, float, int]]:
    sign = -1.0 if higher else 1.0

    def key(t: FrozenTrial) -> tuple[float, float, float, int]:
        return (t.values[SIZE], t.values[LATENCY], sign * t.values[METRIC], t.number)

    return key
