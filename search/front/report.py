"""A study's front as an aligned text table relative to its baseline, with the floor, the
intervals' width and the champion (`tabslim report`, the search's summary, the MLflow run)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd

from search.front import pareto
from search.front.advice import floor_advice
from search.front.champion import recorded_champion
from search.front.served import served_lines
from search.serving import ServedLatency
from search.study import StudySettings, attributes, read_power

__all__ = [
    "delta_text",
    "floor_resolution",
    "fmt",
    "format_report",
    "front_markdown",
    "ratio_text",
    "study_text",
]


def study_text(study: optuna.Study, width: int | None = None) -> str:
    """The front table, the floor beside the intervals' width, and the champion; `width`: see
    `format_report`."""
    settings = StudySettings.read(study)
    table = pareto.trial_table(study)
    lines = [format_report(table, metric=settings.metric, width=width)]
    stopped = attributes.stopped_reason(study)
    if stopped:
        lines.append(f"the search stopped, and no champion was registered: {stopped}")
    elif len(table) and settings.baseline_metric is not None:
        plan = attributes.confirm_plan(study)
        by = plan.get("by", "validation") if plan else "validation"
        lines.append(floor_resolution(table, settings.allowed_drop(), settings.metric, by))
        statement = read_power(study)
        if statement is not None:
            lines.append(statement.text())
        if plan:
            reason = f" ({plan['reason']})" if plan.get("reason") else ""
            lines.append(f"certification: {_how(plan)}{reason}{_cost(study)}")
        picked = recorded_champion(study)
        if picked.trial is not None:
            judged = _out_of_fold(study, picked.trial)
            lines.append(
                f"champion ({picked.rule}): trial {picked.trial.number}, {picked.note}{judged}"
            )
        else:
            lines.append(f"champion ({picked.rule}): none, {picked.note}")
        lines += [f"  passed over {reason}" for reason in picked.failed[:_SHOWN_FAILED]]
        if len(picked.failed) > _SHOWN_FAILED:
            lines.append(f"  ... and {len(picked.failed) - _SHOWN_FAILED} more")
        served, problem = attributes.served_latency(study)
        lines += served_lines([ServedLatency.from_dict(entry) for entry in served], problem)
        # What the rows can certify, where they certified nothing smaller than the baseline,
        # or where the split alone decided though it cannot resolve the floor.
        half = pareto.validation_half_width(table)
        unresolved = (
            by == "validation" and half is not None and half > settings.allowed_drop()
        ) or (by == "holdout" and statement is not None and not statement.can_certify)
        if picked.trial is not None and (attributes.is_baseline(picked.trial) or unresolved):
            lines += floor_advice(study)
    return "\n".join(lines)


# Smaller candidates whose failure the report spells out; the rest are counted.
_SHOWN_FAILED = 5


def _how(plan: dict[str, Any]) -> str:
    if plan.get("by") == "folds":
        return f"by {plan['k']} folds (certifies the recipe, not the registered weights)"
    if plan.get("by") == "holdout":
        return f"on {plan.get('certify_rows', 0)} held-out rows"
    return "on the validation rows, which also selected (optimistic)"


def _cost(study: optuna.Study) -> str:
    """What certification cost: candidates judged along the sequence, networks trained,
    seconds."""
    cost = attributes.confirm_cost(study)
    if not cost:
        return ""
    early = f", {cost['rejected_early']} rejected early" if cost.get("rejected_early") else ""
    chain = f" (a fixed sequence of {cost['chain']})" if "chain" in cost else ""
    trained = f" with {cost['trainings']} trainings" if cost.get("trainings") else ""
    return (
        f"; judged {cost['candidates']} of {cost['of']} candidates{chain}{trained}{early} "
        f"in {cost['seconds']:.0f} s"
    )


def _out_of_fold(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """The champion's certified delta and interval: on the certification rows, or out of
    fold."""
    confirmed = attributes.confirmation(study) or {}
    entry = confirmed.get(str(trial.number), {})
    if "cv_delta_ci_low" not in entry:
        return ""
    interval = (entry["val_delta_mean"], entry["cv_delta_ci_low"], entry["cv_delta_ci_high"])
    where = "certification" if entry.get("by") == "holdout" else "out-of-fold"
    return f" ({where} delta {delta_text(*interval)})"


def floor_resolution(
    table: pd.DataFrame, max_drop: float, metric: str, by: str = "validation"
) -> str:
    """The floor next to the median half-width of the trials' paired validation intervals,
    and plainly whether the validation rows could tell a candidate within the floor where they
    certified (`by` "validation"); "holdout" and "folds" certified on other rows."""
    half = pareto.validation_half_width(table)
    if half is None:
        return f"floor: {metric} within {max_drop:g} of the baseline"
    line = (
        f"floor: {metric} within {max_drop:g} of the baseline; the median 95% interval of a "
        f"trial's validation delta is +/-{half:.4f}"
    )
    if by == "holdout":
        line += " (they select; the champion is certified on held-out rows)"
    elif half > max_drop and by == "folds":
        line += (
            ": the validation set is too small to resolve the floor, so the champion was "
            "judged out-of-fold, on every training and validation row"
        )
    elif half > max_drop:
        line += (
            ": the validation set is too small to resolve the floor, so 'within the floor' is "
            "not a promise here (use more rows, data.certify_fraction, search.confirm: 5 to "
            "judge on every training row, or a larger search.max_metric_drop)"
        )
    return line


def format_report(table: pd.DataFrame, *, metric: str, width: int | None = None) -> str:
    """Aligned text table of the baseline and the front members of `trial_table` output.

    Deltas are candidate minus baseline on the same rows, with paired 95% bootstrap intervals.
    With `width` (a terminal's columns), the columns the deltas and ratios make up for go first
    until the rows fit: the precision while every row is fp32, the absolute metrics, the
    parameter count, then the test delta (`trials.csv` keeps them all).
    """
    if table.empty:
        return "No finished trials yet: run a search first, then report again."
    base, members = _split(table)
    shown = pd.concat([base, members])
    header = _summary(table, metric) + (
        " (baseline first)" if len(base) else " (no baseline finished yet)"
    )
    names = (
        "trial",
        "approach",
        "precision",
        "widths",
        "params",
        "param ratio",
        "latency ratio",
        f"val {metric}",
        "val delta [95% CI]",
        f"test {metric}",
        "test delta [95% CI]",
    )
    # Text columns read best left-aligned, numbers right-aligned so their digits line up.
    left = (False, True, True, True, False, False, False, False, False, False, False)
    cells = [_cells(row) for row in shown.itertuples(index=False)]
    keep = list(range(len(names)))
    # Then, where INT8 copies keep the precision, the test delta (the champion is chosen on
    # validation), and the precision itself (the approach says quantize).
    spare = [2, 7, 9, 4, 10] if all(r[2] == "fp32" for r in cells) else [7, 9, 4, 10, 2]
    while width is not None and spare and _width([names, *cells], keep) > width:
        keep.remove(spare.pop(0))
    heads, lefts = [names[i] for i in keep], [left[i] for i in keep]
    cells = [tuple(r[i] for i in keep) for r in cells]
    widths = [max(len(r[i]) for r in [heads, *cells]) for i in range(len(heads))]
    lines = [header, _join(heads, widths, lefts)]
    lines += [_join(r, widths, lefts) for r in cells]
    if members.empty:
        lines.append("No feasible candidate besides the baseline yet.")
    return "\n".join(lines)


def front_markdown(table: pd.DataFrame, *, metric: str, max_rows: int = 40) -> str:
    """The baseline and the front of `trial_table` output as a markdown table.

    It is a run's description in the MLflow UI, so it stays short: at most `max_rows` front
    members (the smallest; the rest are in `pareto_front.csv`), and only the columns that
    decide between them.
    """
    if table.empty:
        return "No finished trials yet."
    base, members = _split(table)
    lines = [
        f"**{_summary(table, metric)}**; a delta is the candidate's {metric} minus the "
        "baseline's on the same rows, with its paired 95% bootstrap interval.",
        "",
        f"| trial | approach | precision | widths | param ratio | latency ratio | val delta "
        f"{metric} [95% CI] | test delta [95% CI] |",
        "| ---: | :--- | :--- | :--- | ---: | ---: | ---: | ---: |",
    ]
    for row in pd.concat([base, members.head(max_rows)]).itertuples(index=False):
        cells = (
            str(row.trial),
            "baseline" if row.baseline else str(row.approach),
            str(row.precision),
            str(row.hidden) or "-",
            ratio_text(row.param_ratio),
            ratio_text(row.latency_ratio),
            delta_text(row.metric_delta, row.delta_low, row.delta_high),
            delta_text(row.test_delta, row.test_delta_low, row.test_delta_high),
        )
        lines.append("| " + " | ".join(cells) + " |")
    if len(members) > max_rows:
        lines += ["", f"{len(members) - max_rows} more front members in `pareto_front.csv`."]
    if members.empty:
        lines += ["", "No feasible candidate besides the baseline yet."]
    return "\n".join(lines)


def _width(rows: Sequence[Sequence[str]], keep: Sequence[int]) -> int:
    """The characters a row of the `keep` columns takes, two between columns."""
    return sum(max(len(r[i]) for r in rows) for i in keep) + 2 * (len(keep) - 1)


def _split(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline row (none while it runs) and the other front members."""
    return table[table["baseline"]], table[table["pareto"] & ~table["baseline"]]


def _summary(table: pd.DataFrame, metric: str) -> str:
    n_front = int(table["pareto"].sum())
    stopped = int(table["stopped_epochs"].notna().sum())
    # Multi-fidelity: trials stopped at a rung finished, but untrained in full; never on the front.
    at_rungs = f", {stopped} of them stopped at a rung" if stopped else ""
    return (
        f"{metric}: {n_front} Pareto-front model{'s' if n_front != 1 else ''} "
        f"of {len(table)} finished trial{'s' if len(table) != 1 else ''}{at_rungs}"
    )


def _cells(row: Any) -> tuple[str, ...]:
    return (
        str(row.trial),
        "baseline" if row.baseline else row.approach,
        row.precision,
        row.hidden or "-",
        fmt(row.parameters, ",.0f"),
        ratio_text(row.param_ratio),
        ratio_text(row.latency_ratio),
        fmt(row.metric, ".4f"),
        delta_text(row.metric_delta, row.delta_low, row.delta_high),
        fmt(row.test_metric, ".4f"),
        delta_text(row.test_delta, row.test_delta_low, row.test_delta_high),
    )


def delta_text(delta: float, low: float, high: float) -> str:
    """ "-0.0037 [-0.0111, +0.0037]", or just the delta when there is no interval."""
    if math.isnan(low) or math.isnan(high):
        return fmt(delta, "+.4f")
    return f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]"


def fmt(value: Any, spec: str, suffix: str = "") -> str:
    """`value` formatted by `spec`, or "-" for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def ratio_text(value: float) -> str:
    # Two decimals read well ("0.23x") but would show a 50x smaller network as "0.02x".
    return fmt(value, ".2f" if math.isnan(value) or value >= 0.1 else ".3f", "x")


def _join(cells: Sequence[str], widths: Sequence[int], left: Sequence[bool]) -> str:
    return "  ".join(
        c.ljust(w) if is_left else c.rjust(w)
        for c, w, is_left in zip(cells, widths, left, strict=True)
    ).rstrip()
