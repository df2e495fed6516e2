"""Typed readers and writers of a trial's attributes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from search.study.attributes.keys import DROPPED, TrialKey

__all__ = [
    "approach",
    "baseline_attrs",
    "candidate_key",
    "hidden",
    "is_baseline",
    "is_repeat",
    "is_variant",
    "network_digests",
    "owner",
    "plan_dict",
    "precision",
    "precision_label",
    "prune_details",
    "queued_attrs",
    "repeat_of",
    "rung_records",
    "rung_schedule",
    "rung_stop",
    "spec_dict",
    "stopped_below_floor",
    "trial_metrics",
    "variant_attrs",
    "variant_of",
    "was_dropped",
    "where_ran",
    "widths_text",
    "write_candidate",
    "write_outcome",
    "write_rung_stop",
    "write_rungs",
]


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
