"""Hypervolume: how much of the objective space a study's feasible trials dominate.

A small exact implementation (slicing one objective at a time), since Optuna keeps its own
private. A study has three objectives and at most a few hundred trials, for which this is fast.
"""

from __future__ import annotations

import math

import numpy as np
import optuna

from search.front.pareto import (
    LATENCY,
    METRIC,
    SIZE,
    baseline_trial,
    complete_trials,
    higher_is_better,
)
from search.study import StudySettings, is_feasible

__all__ = ["dominated_volume", "hypervolume"]

# A zero allowed drop would make the hypervolume box flat; this keeps ties with the baseline at
# (almost) nothing while candidates that beat the baseline still count.
_EPS = 1e-9


def dominated_volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume of the region that the minimised `points` (n, d) dominate, bounded by `reference`.

    Points not strictly inside the reference box add nothing.
    """
    points = np.asarray(points, dtype=float).reshape(-1, len(reference))
    inside = points[np.all(points < reference, axis=1)]
    return _volume(inside, np.asarray(reference, dtype=float))


def _volume(points: np.ndarray, reference: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    # Slabs along the first objective: between consecutive point values, the dominated region's
    # cross-section is what the points at or below that value dominate in the other objectives.
    order = np.argsort(points[:, 0], kind="stable")
    ordered = points[order]
    edges = np.append(ordered[:, 0], reference[0])
    total = 0.0
    for i in range(len(ordered)):
        width = edges[i + 1] - edges[i]
        if width > 0:
            total += width * _volume(ordered[: i + 1, 1:], reference[1:])
    return total


def hypervolume(study: optuna.Study, *, latency_ref: float = 1.25) -> float:
    """Hypervolume of the feasible trials, relative to the baseline; 0.0 without a baseline.

    Each trial becomes the minimised point (metric loss vs baseline, size ratio, latency ratio)
    and the reference point is (the allowed drop, 1.0, latency_ref), or a tiny metric margin when
    no drop is allowed: only trials better than the floor, smaller than the baseline and faster
    than `latency_ref` times its latency add volume.

    The space is scaled by one baseline, so use this to compare samplers or runs on the same
    dataset and baseline, not to compare datasets.

    Args:
        latency_ref: The slowest latency ratio that still counts. Above 1.0 on purpose: a
            smaller network may not be measurably faster (per-call overhead, noise).
    """
    # A programming error, not user input: the config checks the flag where it enters.
    if not (math.isfinite(latency_ref) and latency_ref > 0):
        raise ValueError(f"latency_ref must be a positive number, but got {latency_ref=}.")
    settings = StudySettings.read(study)
    trials = complete_trials(study)
    base = baseline_trial(study, trials)
    base_metric = settings.baseline_metric
    if base is None or base_metric is None:
        return 0.0
    values = np.array([t.values for t in trials if is_feasible(t)], dtype=float).reshape(-1, 3)
    sign = 1.0 if higher_is_better(study) else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        # Shape (n_feasible, 3): loss, size ratio, latency ratio; all minimised.
        points = np.column_stack(
            [
                # Clipped at 0: a gain over the baseline is one or two lucky validation rows
                # on small tables, and would otherwise outweigh any amount of shrinking.
                np.maximum(sign * (base_metric - values[:, METRIC]), 0.0),
                values[:, SIZE] / base.values[SIZE],
                values[:, LATENCY] / base.values[LATENCY],
            ]
        )
    drop = settings.allowed_drop()
    # NaN ratios compare False against the reference and drop out.
    return dominated_volume(points, np.array([drop if drop > 0 else _EPS, 1.0, latency_ref]))
