"""The keys: every study and trial attribute a tabslim study stores."""

from __future__ import annotations

from search.cluster.liveness import DROPPED_ATTR, OWNER_ATTR
from search.cluster.network_store import DIGESTS_ATTR

__all__ = ["StudyKey", "TrialKey"]


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
    # The baseline and the champion timed as served after the search (`search.serving`).
    SERVED_LATENCY = "tabslim_served_latency"


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
