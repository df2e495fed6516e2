"""The champion: which trained network a study recommends, and why each smaller one was not.

- "confident" (the default): the smallest candidate whose confirmed 95% interval of its delta
  to the baseline lies within the floor. Candidates are every finished trial and INT8 copy
  smaller than the baseline whose validation interval still reaches into the floor, not only
  the Pareto front: a network dominated on validation by a lucky neighbour may be the one that
  holds. The interval is the out-of-fold one where `search.front.confirm` judged by folds, the
  validation split's otherwise. An INT8 copy passes only with its fp32 source.
- "smallest": the smallest trial within the floor by its validation point estimate, uncertified.
- "within_budget": the most accurate candidate within `search.budget` (parameters, latency),
  judged on the same intervals.

The rule "lies within the floor" is a one-sided test of non-inferiority: the lower end of the
two-sided 95% interval (97.5% one-sided) must be above the floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.config import ChampionRule
from search.front import pareto
from search.front.pareto import LATENCY, METRIC, SIZE, baseline_trial, complete_trials
from search.study import StudySettings, attributes, fully_trained, is_feasible

__all__ = [
    "Champion",
    "Verdict",
    "candidates",
    "champion",
    "closest_to_budget",
    "decide_champion",
    "recorded_champion",
    "certified_by",
    "could_hold",
    "meets_budget",
    "split_verdict",
    "verdict",
]

# The reasons a note lists for smaller candidates that failed; the rest are counted.
_SHOWN_REASONS = 5


@dataclass(frozen=True)
class Verdict:
    """A candidate's judged interval of candidate minus baseline, and whether it holds."""

    trial: int
    delta: float
    low: float
    high: float
    passed: bool | None  # None: not judged (confirmation stopped before it)
    how: str  # "certification", "out-of-fold", "validation" (or "seeds", in older studies)
    reason: str = ""


@dataclass(frozen=True)
class Champion:
    """The trial to register and why; `trial` is None when nothing can be registered.

    `failed` says, smallest first, why each smaller candidate was passed over.
    """

    trial: FrozenTrial | None
    rule: str
    note: str
    failed: tuple[str, ...] = ()


def could_hold(trial: FrozenTrial, settings: StudySettings) -> bool:
    """Whether the trial's validation interval still reaches into the floor (its point estimate,
    where it has no interval): only then can a confirmation find it within the floor."""
    metrics = attributes.trial_metrics(trial)
    low, high = metrics.get("val_delta_ci_low"), metrics.get("val_delta_ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return is_feasible(trial)
    drop = settings.allowed_drop()
    return bool(high > -drop) if settings.higher_is_better else bool(low < drop)


def candidates(study: optuna.Study) -> list[FrozenTrial]:
    """Every finished trial and INT8 copy smaller than the baseline that could hold the floor,
    in the champion's order: smallest by the size objective, then faster, then better."""
    settings = StudySettings.read(study)
    trials = complete_trials(study)
    base = baseline_trial(study, trials)
    kept = [
        t
        for t in trials
        if not attributes.is_repeat(t)
        and not attributes.is_baseline(t)
        and fully_trained(t)
        and (base is None or t.values[SIZE] < base.values[SIZE])
        and could_hold(t, settings)
    ]
    sign = -1.0 if settings.higher_is_better else 1.0
    return sorted(
        kept, key=lambda t: (t.values[SIZE], t.values[LATENCY], sign * t.values[METRIC], t.number)
    )


def split_verdict(trial: FrozenTrial, settings: StudySettings) -> Verdict:
    metrics = attributes.trial_metrics(trial)
    nan = float("nan")
    low = float(metrics.get("val_delta_ci_low", nan))
    high = float(metrics.get("val_delta_ci_high", nan))
    delta = float(metrics.get("val_delta", settings.delta(trial.values[METRIC])))
    return Verdict(trial.number, delta, low, high, settings.is_confident(low, high), "validation")


def verdict(study: optuna.Study, trial: FrozenTrial) -> Verdict:
    """How `trial` fared: out-of-fold or under seeds where confirmation judged it, on the
    validation split otherwise. An INT8 copy passes only when its source passes as well."""
    own = _own_verdict(study, trial)
    source = attributes.variant_of(trial)
    if source is None or not own.passed:
        return own
    held = _own_verdict(study, study.trials[source]).passed
    if held:
        return own
    reason = f"its source, trial {source}, does not hold the floor"
    return Verdict(own.trial, own.delta, own.low, own.high, False, own.how, reason)


# How a stored verdict was reached, by its "by".
_HOW = {"holdout": "certification", "folds": "out-of-fold", "seeds": "seeds"}
# What the champion's note calls each kind of interval.
_INTERVAL = {
    "certification": "95% interval on the certification rows",
    "out-of-fold": "out-of-fold 95% interval (a certificate of the recipe, not of the "
    "registered weights)",
    "validation": "95% interval on the validation rows (which also selected it: optimistic)",
}


def _own_verdict(study: optuna.Study, trial: FrozenTrial) -> Verdict:
    settings = StudySettings.read(study)
    confirmed = attributes.confirmation(study)
    if confirmed is None:
        return split_verdict(trial, settings)
    entry = confirmed.get(str(trial.number))
    source = attributes.variant_of(trial)
    if entry is None and source is not None and confirmed.get(str(source), {}).get("by") == "seeds":
        # Under seeds a copy is judged by its own split interval; its source by its runs.
        own = split_verdict(trial, settings)
        return Verdict(own.trial, own.delta, own.low, own.high, own.passed, "seeds")
    if entry is None and source is not None and not attributes.has_power(study):
        # Studies confirmed before copies were judged on their own stood them with their source.
        # Never since certification rows (a study with a power statement): an untested copy
        # inheriting its source's pass was a false certificate on a real table (-1.4 points).
        entry = confirmed.get(str(source))
    if entry is None:
        nan = float("nan")
        return Verdict(trial.number, nan, nan, nan, None, "out-of-fold", "not judged")
    how = _HOW.get(entry.get("by", "seeds"), "seeds")
    delta = float(entry.get("val_delta_mean", float("nan")))
    low = float(entry.get("cv_delta_ci_low", delta))
    high = float(entry.get("cv_delta_ci_high", delta))
    return Verdict(
        trial.number, delta, low, high, bool(entry.get("passed")), how, entry.get("reason", "")
    )


def champion(study: optuna.Study, rule: str | None = None) -> Champion:
    """The model to recommend by `rule` (default: the study's); see the module docstring."""
    settings = StudySettings.read(study)
    chosen_rule = ChampionRule(rule or settings.champion)
    rule = chosen_rule.value
    if chosen_rule is ChampionRule.SMALLEST:
        chosen = pareto.recommend(study)
        note = (
            "smallest trial within the floor by its validation point estimate (uncertified: "
            "no interval was asked to clear the floor)"
            if chosen
            else "no trial finished"
        )
        return Champion(chosen, rule, note)
    if chosen_rule.needs_budget:
        return _within_budget(study, settings)
    base = baseline_trial(study, complete_trials(study))
    how = _INTERVAL[certified_by(study)]
    failed: list[str] = []
    unjudged = 0
    for trial in candidates(study):
        judged = verdict(study, trial)
        if judged.passed:
            # Studies certified before seeds were removed say how they were.
            confirmed = ", confirmed under more seeds" if judged.how == "seeds" else ""
            note = f"smallest trial whose {how} lies within the floor{confirmed}"
            return Champion(trial, rule, note + _passed_over(failed, unjudged), tuple(failed))
        if judged.passed is None:
            unjudged += 1  # the fixed sequence ended before it (search/front/certify.py)
            continue
        failed.append(_failure(study, trial, judged, settings))
    if base is None:
        return Champion(None, rule, "the baseline has not finished", tuple(failed))
    note = f"no candidate's {how} lies within the floor, so the champion is the baseline"
    note += _passed_over(failed, unjudged, all_failed=True)
    return Champion(base, rule, note, tuple(failed))


def decide_champion(study: optuna.Study) -> Champion:
    """The champion by the study's rule, decided once as a search finishes, and recorded on the
    study: the report and the MLflow mirror read that choice rather than deciding again."""
    picked = champion(study)
    number = None if picked.trial is None else picked.trial.number
    choice = attributes.ChampionChoice(number, picked.rule, picked.note, picked.failed)
    attributes.write_champion_choice(study, choice)
    return picked


def recorded_champion(study: optuna.Study) -> Champion:
    """The champion the latest finished search recorded (`decide_champion`); decided now for a
    study no finished search recorded one on (older studies, interrupted searches)."""
    choice = attributes.champion_choice(study)
    if choice is None:
        return champion(study)
    trial = None if choice.trial is None else study.trials[choice.trial]
    return Champion(trial, choice.rule, choice.note, choice.failed)


def certified_by(study: optuna.Study) -> str:
    """ "certification", "out-of-fold" or "validation": what the stored verdicts rest on."""
    plan = attributes.confirm_plan(study)
    confirmed = attributes.confirmation(study)
    if confirmed is None:
        return "validation"
    if plan.get("by") == "folds" or any(v.get("by") == "folds" for v in confirmed.values()):
        return "out-of-fold"
    if plan.get("by") == "holdout" or any(v.get("by") == "holdout" for v in confirmed.values()):
        return "certification"
    return "validation"


def _passed_over(failed: list[str], unjudged: int, all_failed: bool = False) -> str:
    """E.g. " (3 smaller candidates failed, 2 not judged)"."""
    parts = []
    if failed:
        plural = "s" if len(failed) != 1 else ""
        what = f"candidate{plural} judged" if all_failed else f"smaller candidate{plural} failed"
        parts.append(f"{len(failed)} {what}")
    if unjudged:
        parts.append(f"{unjudged} {'more ' if all_failed else 'smaller '}not judged")
    return f" ({', '.join(parts)})" if parts else ""


def _failure(study: optuna.Study, trial: FrozenTrial, judged: Verdict, s: StudySettings) -> str:
    """One line: which trial, its size, and why it did not hold."""
    base = baseline_trial(study, complete_trials(study))
    ratio = pareto.ratio(trial.values[SIZE], base.values[SIZE]) if base else float("nan")
    precision = attributes.precision(trial)
    name = f"trial {trial.number} ({ratio:.3g}x{', ' + precision if precision else ''})"
    interval = f"{judged.how} delta {judged.delta:+.4f} [{judged.low:+.4f}, {judged.high:+.4f}]"
    drop = s.allowed_drop()
    if s.higher_is_better:
        floor, outside = f"-{drop:.4g}", judged.high < -drop
    else:
        floor, outside = f"+{drop:.4g}", judged.low > drop
    why = judged.reason or ("lies outside the floor" if outside else "crosses the floor")
    return f"{name}: {interval} {why} ({floor})"


def meets_budget(trial: FrozenTrial, budget: dict[str, Any]) -> bool:
    """Within every limit of `search.budget` ({"parameters": N, "latency_ms": T}, either)."""
    return all(excess <= 1.0 for excess in _excess(trial, budget).values())


def _excess(trial: FrozenTrial, budget: dict[str, Any]) -> dict[str, float]:
    """Each limit's measured value over the limit (<= 1 is within it)."""
    metrics = attributes.trial_metrics(trial)
    measured = {"parameters": float(metrics.get("parameters", math.inf))}
    measured["latency_ms"] = float(trial.values[LATENCY])
    return {k: measured[k] / float(v) for k, v in budget.items() if v is not None}


def closest_to_budget(study: optuna.Study, budget: dict[str, Any]) -> str:
    """The trial nearest to `budget` (the smallest worst excess), as words for an error line."""
    trials = [t for t in complete_trials(study) if not attributes.is_repeat(t)]
    if not trials:
        return "no trial finished"
    nearest = min(trials, key=lambda t: (max(_excess(t, budget).values()), t.number))
    parameters = float(attributes.trial_metrics(nearest).get("parameters", math.nan))
    return (
        f"the closest is trial {nearest.number} with {parameters:,.0f} parameters and "
        f"{nearest.values[LATENCY]:.4g} ms"
    )


def _within_budget(study: optuna.Study, settings: StudySettings) -> Champion:
    budget = {k: v for k, v in (settings.budget or {}).items() if v is not None}
    rule = "within_budget"
    limits = ", ".join(f"{k} <= {v:g}" for k, v in budget.items())
    inside = [
        t
        for t in complete_trials(study)
        if not attributes.is_repeat(t) and fully_trained(t) and meets_budget(t, budget)
    ]
    if not inside:
        return Champion(
            None,
            rule,
            f"no trial meets search.budget ({limits}); " + closest_to_budget(study, budget),
        )
    judged = [(t, verdict(study, t)) for t in inside]
    # Certification judges those within the budget; only judged ones compete once it has.
    if attributes.confirmation(study) is not None:
        judged = [(t, v) for t, v in judged if v.passed is not None] or judged
    sign = 1.0 if settings.higher_is_better else -1.0

    def accuracy(pair: tuple[FrozenTrial, Verdict]) -> tuple[float, float, int]:
        trial, v = pair
        delta = v.delta if math.isfinite(v.delta) else settings.delta(trial.values[METRIC])
        return (-sign * delta, trial.values[SIZE], trial.number)

    trial, best = min(judged, key=accuracy)
    holds = (
        "holds the floor"
        if best.passed or attributes.is_baseline(trial)
        else ("does not hold the floor")
    )
    note = (
        f"most accurate candidate within search.budget ({limits}) by its {best.how} delta "
        f"{best.delta:+.4f}; it {holds}"
    )
    return Champion(trial, rule, note)
