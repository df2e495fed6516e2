"""Typed readers and writers of the study's own attributes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search.study.attributes.keys import StudyKey

__all__ = [
    "ChampionChoice",
    "champion_choice",
    "confirm_cost",
    "confirm_plan",
    "confirmation",
    "has_power",
    "ladder_refined",
    "mark_ladder_refined",
    "paired_cache",
    "power_dict",
    "served_latency",
    "settings_dict",
    "stopped_reason",
    "trial_target",
    "write_champion_choice",
    "write_confirm_cost",
    "write_confirm_plan",
    "write_confirmation",
    "write_paired_cache",
    "write_power",
    "write_served_latency",
    "write_settings",
    "write_stopped",
    "write_trial_target",
]


def settings_dict(study: optuna.Study) -> dict[str, Any]:
    """The stored settings as written (`StudySettings.read` types them)."""
    return dict(study.user_attrs.get(StudyKey.SETTINGS) or {})


def write_settings(study: optuna.Study, settings: Mapping[str, Any]) -> None:
    study.set_user_attr(StudyKey.SETTINGS, dict(settings))


def stopped_reason(study: optuna.Study) -> str | None:
    """Why the search stopped before its trials; None when it did not."""
    reason = study.user_attrs.get(StudyKey.STOPPED)
    return str(reason) if reason else None


def write_stopped(study: optuna.Study, reason: str) -> None:
    study.set_user_attr(StudyKey.STOPPED, reason)


def power_dict(study: optuna.Study) -> dict[str, Any] | None:
    """The power statement as stored (`search.study.power.read_power` types it)."""
    stored = study.user_attrs.get(StudyKey.POWER)
    return dict(stored) if stored else None


def has_power(study: optuna.Study) -> bool:
    """Whether a power statement was made: true of every study since certification rows."""
    return StudyKey.POWER in study.user_attrs


def write_power(study: optuna.Study, statement: Mapping[str, Any]) -> None:
    study.set_user_attr(StudyKey.POWER, dict(statement))


def trial_target(study: optuna.Study) -> int | None:
    target = study.user_attrs.get(StudyKey.TARGET)
    return None if target is None else int(target)


def write_trial_target(study: optuna.Study, n_trials: int) -> None:
    study.set_user_attr(StudyKey.TARGET, n_trials)


def ladder_refined(study: optuna.Study) -> bool:
    return bool(study.user_attrs.get(StudyKey.LADDER_REFINED))


def mark_ladder_refined(study: optuna.Study) -> None:
    study.set_user_attr(StudyKey.LADDER_REFINED, True)


def paired_cache(study: optuna.Study) -> dict[str, dict[str, float]]:
    return dict(study.user_attrs.get(StudyKey.PAIRED, {}))


def write_paired_cache(study: optuna.Study, cache: Mapping[str, dict[str, float]]) -> None:
    study.set_user_attr(StudyKey.PAIRED, dict(cache))


def confirmation(study: optuna.Study) -> dict[str, dict[str, Any]] | None:
    """Certification's verdict per trial number (as a string); None before it judged any."""
    return study.user_attrs.get(StudyKey.CONFIRMATION)


def write_confirmation(study: optuna.Study, verdicts: Mapping[str, Any] | None) -> None:
    study.set_user_attr(StudyKey.CONFIRMATION, None if verdicts is None else dict(verdicts))


def confirm_plan(study: optuna.Study) -> dict[str, Any]:
    """How certification judged ({"by": ..., "reason": ...}); empty before it ran."""
    return dict(study.user_attrs.get(StudyKey.CONFIRM_PLAN) or {})


def write_confirm_plan(study: optuna.Study, plan: Mapping[str, Any]) -> None:
    study.set_user_attr(StudyKey.CONFIRM_PLAN, dict(plan))


def confirm_cost(study: optuna.Study) -> dict[str, Any] | None:
    cost = study.user_attrs.get(StudyKey.CONFIRM_COST)
    return dict(cost) if cost else None


def write_confirm_cost(study: optuna.Study, cost: Mapping[str, Any] | None) -> None:
    study.set_user_attr(StudyKey.CONFIRM_COST, None if cost is None else dict(cost))


@dataclass(frozen=True)
class ChampionChoice:
    """The champion a finished search chose, as recorded on the study.

    `trial` is None when nothing could be chosen; `failed` says, smallest first, why each
    smaller candidate was passed over.
    """

    trial: int | None
    rule: str
    note: str
    failed: tuple[str, ...] = ()


def champion_choice(study: optuna.Study) -> ChampionChoice | None:
    """The recorded choice; None for a study no search has finished since it was recorded."""
    stored = study.user_attrs.get(StudyKey.CHAMPION)
    if not stored:
        return None
    trial = stored.get("trial")
    return ChampionChoice(
        None if trial is None else int(trial),
        str(stored["rule"]),
        str(stored["note"]),
        tuple(stored.get("failed") or ()),
    )


def write_champion_choice(study: optuna.Study, choice: ChampionChoice | None) -> None:
    """Record the choice; None forgets an earlier one (a search that did not finish)."""
    study.set_user_attr(
        StudyKey.CHAMPION,
        None
        if choice is None
        else {
            "trial": choice.trial,
            "rule": choice.rule,
            "note": choice.note,
            "failed": list(choice.failed),
        },
    )


def served_latency(study: optuna.Study) -> tuple[list[dict[str, Any]], str | None]:
    """The served latencies as stored (`search.serving.ServedLatency.to_dict` each), and why
    HTTP was not measured where it was asked for; ([], None) before any were timed."""
    stored = study.user_attrs.get(StudyKey.SERVED_LATENCY) or {}
    return [dict(entry) for entry in stored.get("latencies") or ()], stored.get("problem")


def write_served_latency(
    study: optuna.Study, latencies: Sequence[Mapping[str, Any]], problem: str | None
) -> None:
    """Record the latest served latencies; none forgets an earlier search's."""
    study.set_user_attr(
        StudyKey.SERVED_LATENCY,
        {"latencies": [dict(entry) for entry in latencies], "problem": problem}
        if latencies
        else None,
    )
