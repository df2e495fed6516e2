"""What these rows can certify, where they cannot certify the floor asked for: exploratory
advice, read off this study's own results (`tabslim report`, the search's summary)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial

from search.front import pareto
from search.front.champion import Verdict, certified_by, split_verdict, verdict
from search.front.pareto import SIZE, baseline_trial, complete_trials
from search.study import StudySettings, attributes, fully_trained

__all__ = ["floor_advice"]


def floor_advice(study: optuna.Study) -> list[str]:
    """What these rows can certify, where they cannot certify the floor asked for.

    From the judged intervals (certification or out-of-fold where they were judged, validation
    otherwise): the smallest floor at which some smaller network holds, the champion at that
    floor, and for the smallest candidate within the floor by its point estimate, how many
    more rows would narrow its interval enough, if its delta held.

    Every line is exploratory and says so: the floors are read off this study's own results,
    so searching again at one of them would certify by construction. Trials stopped at a rung
    are left out (they are never champion), and an interval of width zero projects nothing.
    """
    settings = StudySettings.read(study)
    if settings.baseline_metric is None:
        return []
    trials = complete_trials(study)
    base = baseline_trial(study, trials)
    if base is None:
        return []
    judged = _judged_floors(study, trials, base, settings)
    if not judged:
        return []
    lines = []
    best_trial, _, best_needed = min(judged, key=lambda j: (j[2], j[0].values[SIZE]))
    ratio = pareto.ratio(best_trial.values[SIZE], base.values[SIZE])
    lines.append(
        f"exploratory: smallest floor these rows certify: max_metric_drop {best_needed:.3g} "
        f"(asked: {settings.max_metric_drop:g}); the champion there would be trial "
        f"{best_trial.number} ({ratio:.3g}x)"
    )
    lines.append(_floor_per_size(judged, base))
    more = _more_rows(study, judged, base, settings)
    if more:
        lines.append(
            f"exploratory: more rows, if the deltas held: {', '.join(more)} at max_metric_drop "
            f"{settings.max_metric_drop:g}"
        )
    return lines


# A candidate, its judged interval, and the floor (in max_metric_drop's units) it certifies.
_Judged = tuple[FrozenTrial, Verdict, float]


def _judged_floors(
    study: optuna.Study, trials: list[FrozenTrial], base: FrozenTrial, settings: StudySettings
) -> list[_Judged]:
    """Each fully trained candidate smaller than the baseline with a finite interval, and the
    floor that interval certifies."""
    higher = settings.higher_is_better
    assert settings.baseline_metric is not None
    scale = 1.0 if higher else abs(settings.baseline_metric) or 1.0
    held_out = certified_by(study) != "validation"
    judged = []
    for trial in trials:
        if attributes.is_baseline(trial) or attributes.is_repeat(trial):
            continue
        if trial.values[SIZE] >= base.values[SIZE] or not fully_trained(trial):
            continue
        v = verdict(study, trial)
        if v.passed is None or not (math.isfinite(v.low) and math.isfinite(v.high)):
            if held_out:
                # Only what the held-out rows judged: a validation interval that selected its
                # trial said "max_metric_drop 0" of a network that then failed on test.
                continue
            v = split_verdict(trial, settings)
        if math.isfinite(v.low) and math.isfinite(v.high):
            # The floor this interval certifies, in max_metric_drop's units.
            needed = (-v.low if higher else v.high) / scale
            # + 0.0 turns a negative zero into zero: "max_metric_drop -0" reads as nonsense.
            judged.append((trial, v, max(needed, 0.0) + 0.0))
    return judged


def _floor_per_size(judged: list[_Judged], base: FrozenTrial) -> str:
    """The line of floors by size: each size that needs less than every smaller one, since
    smaller networks need a wider floor."""
    steps, lowest = [], math.inf
    for trial, _, needed in sorted(judged, key=lambda j: j[0].values[SIZE]):
        if needed < lowest:
            lowest = needed
            steps.append((trial, needed))
    shown = ", ".join(
        f"{pareto.ratio(t.values[SIZE], base.values[SIZE]):.3g}x at {n:.3g}" for t, n in steps[:5]
    )
    return f"exploratory: floor each size certifies (smallest first): {shown}"


def _more_rows(
    study: optuna.Study, judged: list[_Judged], base: FrozenTrial, settings: StudySettings
) -> list[str]:
    """For each of `_MORE_ROWS`, the smallest candidate within the floor by its delta that that
    many times the rows would certify (a trial already named is not named again)."""
    higher, drop = settings.higher_is_better, settings.allowed_drop()
    # How many times their rows each candidate would need: a paired interval narrows with the
    # square root of its rows.
    needs = []
    for trial, v, _ in judged:
        margin = (v.delta + drop) if higher else (drop - v.delta)
        # A zero-width interval says nothing of how it would narrow.
        if margin > 0 and not v.passed and v.high > v.low and _rows(study, trial, v):
            needs.append((trial, ((v.high - v.low) / 2 / margin) ** 2))
    more: list[str] = []
    named: int | None = None
    for factor in _MORE_ROWS:
        held = [t for t, need in needs if need <= factor]
        if held:
            smallest = min(held, key=lambda t: t.values[SIZE])
            if smallest.number == named:
                continue  # more rows for the same trial say nothing new
            named = smallest.number
            ratio = pareto.ratio(smallest.values[SIZE], base.values[SIZE])
            more.append(
                f"{factor:g}x the rows would certify trial {smallest.number} ({ratio:.3g}x)"
            )
    return more


# How many times the rows the "more rows" advice considers.
_MORE_ROWS = (2.0, 4.0, 10.0)


def _rows(study: optuna.Study, trial: FrozenTrial, v: Verdict) -> int:
    """How many rows `v`'s interval rests on (0 when the study does not say)."""
    confirmed = attributes.confirmation(study) or {}
    entry = confirmed.get(str(trial.number)) or {}
    if v.how == "out-of-fold" and entry.get("cv_rows"):
        return int(entry["cv_rows"])
    plan = attributes.confirm_plan(study)
    return int(plan.get("val_rows", 0))
