"""What a study stores: the one owner of every study and trial user attribute's key.

As MLflow keeps its system tags in `mlflow_tags.py`, this module names each attribute a tabslim
study holds and reads and writes it with a typed function; no other module spells a key. The
keys and the stored values are those of studies written before this module existed, so that an
old study reads the same.

It sits at the bottom of `search.study` (it imports nothing of the study), so that study, front,
tracking and commands all reach it. Three keys are spelled below it, in `search.cluster`, which
sits below `search.study` and may not import upwards: the owner process a trial is stamped with,
a dropped retry's reason, and the digests of a trial's saved network. They are the cluster's own
protocol, written and checked by its own code; this module imports them from there, lists them
with the rest, and gives the readers that the packages above use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from search.cluster.liveness import DROPPED_ATTR, OWNER_ATTR
from search.cluster.network_store import DIGESTS_ATTR

__all__ = [
    "ChampionChoice",
    "StudyKey",
    "TrialKey",
    "approach",
    "baseline_attrs",
    "candidate_key",
    "champion_choice",
    "confirm_cost",
    "confirm_plan",
    "confirmation",
    "has_power",
    "hidden",
    "is_baseline",
    "is_repeat",
    "is_variant",
    "ladder_refined",
    "mark_ladder_refined",
    "network_digests",
    "owner",
    "paired_cache",
    "plan_dict",
    "power_dict",
    "precision",
    "precision_label",
    "prune_details",
    "queued_attrs",
    "repeat_of",
    "rung_records",
    "rung_schedule",
    "rung_stop",
    "settings_dict",
    "spec_dict",
    "stopped_below_floor",
    "stopped_reason",
    "trial_metrics",
    "trial_target",
    "variant_attrs",
    "variant_of",
    "was_dropped",
    "where_ran",
    "widths_text",
    "write_candidate",
    "write_champion_choice",
    "write_confirm_cost",
    "write_confirm_plan",
    "write_confirmation",
    "write_outcome",
    "write_paired_cache",
    "write_power",
    "write_rung_stop",
    "write_rungs",
    "write_settings",
    "write_stopped",
    "write_trial_target",
]


class StudyKey:
    """The keys of the study's own user attributes."""

    # The settings (`search.study.settings.StudySettings`).
    SETTINGS = "tabslim"
    # Why a search stopped before its trials (a baseline that learned nothing), for the report.
    STOPPED = "tabslim_stopped"
    # What the certification rows can certify, said before the candidates train.
    POWER = "tabslim_power"
    # How many complete trials the latest `tabslim search` asked for: what workers run up to.
    TARGET = "tabslim_n_trials"
    # Set once the widths ladder has been refined (`search.study.space.refine_ladder`).
    LADDER_REFINED = "tabslim_ladder_refined"
    # Prune-versus-scratch paired rows, cached per prune trial (`search.front.paired`).
    PAIRED = "tabslim_paired"
    # The verdicts of certification, per trial number (`search.front.confirm`).
    CONFIRMATION = "tabslim_confirmation"
    # How certification judged: holdout, folds or validation, and why.
    CONFIRM_PLAN = "tabslim_confirm_plan"
    # What certification cost: candidates judged, networks trained, seconds.
    CONFIRM_COST = "tabslim_confirm_cost"
    # The champion the latest finished search chose (`search.front.decide_champion`).
    CHAMPION = "tabslim_champion"


class TrialKey:
    """The keys of a trial's user attributes."""

    BASELINE = "baseline"
    APPROACH = "approach"
    # What was trained, to recognise a repeat of an earlier trial.
    CANDIDATE_KEY = "candidate_key"
    PLAN = "plan"
    # The earlier trial that trained the same candidate; its outcome is copied.
    REPEAT_OF = "repeat_of"
    SPEC = "spec"
    HIDDEN = "hidden"
    METRICS = "metrics"
    STOPPED_BELOW_FLOOR = "stopped_below_floor"
    STOPPED_BY = "stopped_by"
    PRUNE_DETAILS = "prune_details"
    # Multi-fidelity: each rung's record, the schedule, and where the trial was stopped.
    RUNGS = "rungs"
    RUNG_SCHEDULE = "rung_schedule"
    RUNG_STOP = "stopped_at_rung"
    # A quantized copy of a front member: its precision and its source trial. Such a copy is a
    # finished trial of the study, but not one the search ran: it does not count towards
    # `search.n_trials`.
    PRECISION = "precision"
    VARIANT_OF = "variant_of"
    # Stamped by `search.cluster` (see the module docstring).
    OWNER = OWNER_ATTR
    DIGESTS = DIGESTS_ATTR
    # Where its latencies were measured (`search.measure.hosts`).
    WHERE_RAN = ("host", "cpu_model", "reference_latency_ms", "gpu")


# A system attribute, stamped by `search.cluster`: a queued retry dropped unrun, and why.
DROPPED = DROPPED_ATTR


# --- trials -----------------------------------------------------------------------------------


def trial_metrics(trial: FrozenTrial) -> dict[str, float]:
    """The trial's measured metrics; empty while it runs or when it failed."""
    return dict(trial.user_attrs.get(TrialKey.METRICS) or {})


def is_baseline(trial: FrozenTrial | optuna.Trial) -> bool:
    return bool(trial.user_attrs.get(TrialKey.BASELINE, False))


def baseline_attrs() -> dict[str, Any]:
    """The user attributes the baseline trial is queued with."""
    return {TrialKey.BASELINE: True}


def queued_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """What a retried trial carries from the start: the rest is the dead run's, and is redone."""
    return {k: trial.user_attrs[k] for k in (TrialKey.BASELINE,) if k in trial.user_attrs}


def approach(trial: FrozenTrial) -> str:
    """ "scratch", "distill", "prune", "quantize"; "" for a trial that drew none."""
    return str(trial.user_attrs.get(TrialKey.APPROACH, ""))


def candidate_key(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(TrialKey.CANDIDATE_KEY)


def plan_dict(trial: FrozenTrial) -> dict[str, Any] | None:
    """A prune trial's plan (`pruning.plan.PruningPlan.to_dict`); None for other approaches."""
    return trial.user_attrs.get(TrialKey.PLAN)


def repeat_of(trial: FrozenTrial) -> int | None:
    number = trial.user_attrs.get(TrialKey.REPEAT_OF)
    return None if number is None else int(number)


def is_repeat(trial: FrozenTrial) -> bool:
    return TrialKey.REPEAT_OF in trial.user_attrs


def spec_dict(trial: FrozenTrial) -> dict[str, Any]:
    """The trained network's spec (`lightning_modules.networks.spec_from_dict` reads it)."""
    return dict(trial.user_attrs[TrialKey.SPEC])


def hidden(trial: FrozenTrial) -> list[int] | None:
    """The widths per prunable group; None for a trial that did not finish."""
    widths = trial.user_attrs.get(TrialKey.HIDDEN)
    return None if widths is None else list(widths)


def stopped_below_floor(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(TrialKey.STOPPED_BELOW_FLOOR))


def prune_details(trial: FrozenTrial) -> dict[str, Any]:
    """What an adaptive schedule chose by itself: kept widths, steps accepted and rolled back."""
    return dict(trial.user_attrs.get(TrialKey.PRUNE_DETAILS) or {})


class _Host(Protocol):
    """Where a trial was timed (`search.measure.HostProfile`)."""

    @property
    def host(self) -> str: ...
    @property
    def cpu_model(self) -> str: ...
    @property
    def reference_ms(self) -> float: ...
    @property
    def gpu(self) -> str | None: ...


def where_ran(trial: FrozenTrial) -> dict[str, Any]:
    """Host, CPU model, reference latency and GPU of the host that timed the trial."""
    return {k: trial.user_attrs[k] for k in TrialKey.WHERE_RAN if k in trial.user_attrs}


def _host_attrs(host: _Host) -> dict[str, Any]:
    return {
        "host": host.host,
        "cpu_model": host.cpu_model,
        "reference_latency_ms": host.reference_ms,
        **({"gpu": host.gpu} if host.gpu else {}),
    }


def precision(trial: FrozenTrial) -> str | None:
    """ "int8" for a quantized copy; None for a trial the search trained (fp32)."""
    value = trial.user_attrs.get(TrialKey.PRECISION)
    return None if value is None else str(value)


def precision_label(trial: FrozenTrial) -> str:
    """The precision a trial serves at: "fp32" for a trained one."""
    return precision(trial) or "fp32"


def widths_text(trial: FrozenTrial) -> str:
    """The widths per prunable group as one word, e.g. "64-32"; "" for an unfinished trial."""
    return "-".join(map(str, hidden(trial) or []))


def variant_of(trial: FrozenTrial) -> int | None:
    """The front member a quantized copy was made from; None for a trained trial."""
    source = trial.user_attrs.get(TrialKey.VARIANT_OF)
    return None if source is None else int(source)


def is_variant(trial: FrozenTrial) -> bool:
    return TrialKey.VARIANT_OF in trial.user_attrs


def rung_records(trial: FrozenTrial) -> dict[str, dict[str, Any]]:
    """Multi-fidelity: the trial's record at each rung it reached, by epochs."""
    return dict(trial.user_attrs.get(TrialKey.RUNGS) or {})


def rung_schedule(trial: FrozenTrial) -> Any:
    return trial.user_attrs.get(TrialKey.RUNG_SCHEDULE)


def rung_stop(trial: FrozenTrial) -> dict[str, Any] | None:
    """Where a multi-fidelity search stopped the trial ({"rung", "epochs", "reason"}), or None."""
    return trial.user_attrs.get(TrialKey.RUNG_STOP)


def owner(trial: FrozenTrial) -> str | None:
    """The process that ran the trial (`search.cluster.liveness`)."""
    value = trial.user_attrs.get(TrialKey.OWNER)
    return None if value is None else str(value)


def was_dropped(trial: FrozenTrial) -> bool:
    """A queued retry dropped unrun because the study already had its trials."""
    return DROPPED in trial.system_attrs


def network_digests(trial: FrozenTrial) -> dict[str, str] | None:
    """{file name: sha256} of the trial's saved network (`search.cluster.network_store`)."""
    return trial.user_attrs.get(TrialKey.DIGESTS)


def write_candidate(
    trial: optuna.Trial, approach: str, key: str, plan: Mapping[str, Any] | None
) -> None:
    """What the trial drew, before it trains."""
    trial.set_user_attr(TrialKey.APPROACH, approach)
    trial.set_user_attr(TrialKey.CANDIDATE_KEY, key)
    if plan is not None:
        trial.set_user_attr(TrialKey.PLAN, dict(plan))


def write_outcome(
    trial: optuna.Trial,
    *,
    repeat: FrozenTrial | None = None,
    hidden: Sequence[int] | None = None,
    spec: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    stopped_below_floor: bool | None = None,
    stopped_by: str | None = None,
    host: _Host | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """What the trial trained and measured; for a repeat, the earlier trial's, copied.

    Args:
        repeat: the finished trial that trained the same candidate: its metrics, spec, widths
            and host are copied (its metrics were measured where it ran), and the trial is
            marked a repeat of it.
        host: where its latencies were measured.
        details: what an adaptive pruning schedule chose; not stored when empty.
    """
    attrs: dict[str, Any] = {}
    if repeat is not None:
        attrs[TrialKey.REPEAT_OF] = repeat.number
        names = (TrialKey.METRICS, TrialKey.SPEC, TrialKey.HIDDEN, *TrialKey.WHERE_RAN)
        attrs |= {name: repeat.user_attrs[name] for name in names if name in repeat.user_attrs}
    if hidden is not None:
        attrs[TrialKey.HIDDEN] = list(hidden)
    if spec is not None:
        attrs[TrialKey.SPEC] = dict(spec)
    if metrics is not None:
        attrs[TrialKey.METRICS] = dict(metrics)
    if stopped_below_floor is not None:
        attrs[TrialKey.STOPPED_BELOW_FLOOR] = stopped_below_floor
    if stopped_by is not None:
        attrs[TrialKey.STOPPED_BY] = stopped_by
    if host is not None:
        attrs |= _host_attrs(host)
    if details:
        attrs[TrialKey.PRUNE_DETAILS] = dict(details)
    for name, value in attrs.items():
        trial.set_user_attr(name, value)


def write_rungs(trial: optuna.Trial, records: Mapping[str, Any], schedule: Any) -> None:
    trial.set_user_attr(TrialKey.RUNGS, dict(records))
    trial.set_user_attr(TrialKey.RUNG_SCHEDULE, schedule)


def write_rung_stop(trial: optuna.Trial, stop: Mapping[str, Any]) -> None:
    trial.set_user_attr(TrialKey.RUNG_STOP, dict(stop))


def variant_attrs(
    member: FrozenTrial, precision: str, metrics: Mapping[str, float], digests: Mapping[str, str]
) -> dict[str, Any]:
    """The user attributes of `member`'s quantized copy at `precision`: its own metrics and
    files, the source's shape, and the source's host (it was timed there too)."""
    attrs: dict[str, Any] = {
        TrialKey.APPROACH: "quantize",
        TrialKey.PRECISION: precision,
        TrialKey.VARIANT_OF: member.number,
        TrialKey.HIDDEN: member.user_attrs[TrialKey.HIDDEN],
        TrialKey.SPEC: member.user_attrs[TrialKey.SPEC],
        TrialKey.METRICS: dict(metrics),
        TrialKey.DIGESTS: dict(digests),
    }
    return attrs | where_ran(member)


# --- the study --------------------------------------------------------------------------------


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
