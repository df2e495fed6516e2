"""The confirmation step: candidates judged again, for the smallest that holds the floor.

Candidates are every finished trial and INT8 copy that could hold the floor
(`search.champion.candidates`), not only the front: a small network dominated on validation by
a lucky neighbour is often the one that holds. They are judged in the champion's order,
smallest first, galloping over failures and bisecting back (`_smallest_passing`); the judging
itself is `search.judges`.

- `search.confirm_by: folds`: a validation split of a few thousand rows gives a paired interval
  wider than a 0.5-point floor, so which small network clears it is mostly luck. The training
  and validation rows are dealt into K folds (`TabularDataModule.refolded`); per fold the
  baseline and the candidate are trained on the others, and each row is scored by the networks
  that did not see it. A candidate passes when its paired 95% interval over all those rows
  lies within the floor. After two folds, a candidate whose interval already lies wholly
  outside the floor is rejected without training the rest.
- `search.confirm_by: seeds`: the candidate trained again under K more seeds; it passes when
  its mean validation delta over all runs lies within the floor and its split interval did.

An INT8 copy is judged with its source: the source's fold networks are quantized the same
way (no training of their own), and the copy passes only when it and its source both do.
`search.confirm_limit` bounds how many candidates are judged; the cost is kept on the study.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial
from tqdm import tqdm

from search.front import pareto
from search.front.champion import COST_ATTR, candidates, meets_budget
from search.front.judges import COLUMNS, FOLD_COLUMNS, Folds, Judge, Seeds
from search.study import SearchContext, StudySettings, fully_trained

# search.confirm: auto. Five folds, the usual choice for cross-validation. Below AUTO_MIN_ROWS
# training and validation rows the validation split is too small to project from (85 rows on
# which two networks agree give an interval of exactly 0), and folds measured on such tables
# could not resolve a 0.5-point floor either (bench/RESULTS.md, digits and breast_cancer).
AUTO_FOLDS = 5
AUTO_MIN_ROWS = 5_000
# The verdict per trial that `search.champion` reads.
SUMMARY_ATTR = pareto.CONFIRMATION_ATTR


@dataclass(frozen=True)
class ConfirmPlan:
    """How candidates are confirmed after this search (`k` 0: not at all), and why; the rows
    of the validation split and of training plus validation, for the report's arithmetic."""

    k: int
    by: str
    reason: str
    val_rows: int = 0
    rows: int = 0


def plan_confirmation(study: optuna.Study, ctx: SearchContext) -> ConfirmPlan:
    """`search.confirm` as given, or what `auto_plan` decides for `auto`."""
    search = ctx.config.search
    val_rows = len(ctx.data.val_frame)
    rows = len(ctx.data.train_frame) + val_rows
    if search.confirm != "auto":
        by = search.confirm_by or "seeds"
        return ConfirmPlan(search.confirm, by, "search.confirm", val_rows, rows)
    settings = StudySettings.read(study)
    half = pareto.validation_half_width(pareto.trial_table(study))
    if half is None or settings.baseline_metric is None:
        reason = "auto: no trial has a validation interval to judge by"
        return ConfirmPlan(0, "folds", reason, val_rows, rows)
    plan = auto_plan(
        half, settings.allowed_drop(), val_rows, rows, bool(ctx.config.data.time_column)
    )
    return dataclasses.replace(plan, val_rows=val_rows, rows=rows)


def auto_plan(
    half: float, drop: float, val_rows: int, rows: int, time_ordered: bool
) -> ConfirmPlan:
    """`search.confirm: auto`: AUTO_FOLDS folds when the validation intervals' median
    half-width `half` is wider than the floor `drop`, and folds over all `rows` training and
    validation rows are expected to narrow it within the floor (a paired interval narrows with
    the square root of its rows), on at least AUTO_MIN_ROWS rows not ordered in time."""
    if time_ordered:
        return ConfirmPlan(
            0,
            "folds",
            "auto: skipped, data.time_column orders the rows, and "
            "folds dealt at random would train on later rows",
        )
    seen = f"the validation intervals (+/-{half:.4f}, median)"
    if half <= drop:
        return ConfirmPlan(0, "folds", f"auto: not needed, {seen} resolve the floor ({drop:.4g})")
    projected = half * math.sqrt(val_rows / rows)
    expected = f"{AUTO_FOLDS} folds over {rows} rows would give about +/-{projected:.4f}"
    if rows < AUTO_MIN_ROWS:
        return ConfirmPlan(
            0,
            "folds",
            f"auto: skipped, {seen} are wider than the floor "
            f"({drop:.4g}), but {rows} rows are fewer than {AUTO_MIN_ROWS}, too few "
            "for folds to resolve it",
        )
    if projected > drop:
        return ConfirmPlan(
            0,
            "folds",
            f"auto: skipped, {seen} are wider than the floor "
            f"({drop:.4g}) and {expected}, still wider",
        )
    return ConfirmPlan(
        AUTO_FOLDS, "folds", f"auto: {seen} are wider than the floor ({drop:.4g}); {expected}"
    )


def confirm_search(
    study: optuna.Study, ctx: SearchContext, progress: bool = False
) -> pd.DataFrame | None:
    """The confirmation step after a finished search, as `plan_confirmation` decides it; the
    plan and the cost are kept on the study for the report. Returns the table, or None."""
    plan = plan_confirmation(study, ctx)
    study.set_user_attr(pareto.CONFIRM_PLAN_ATTR, dataclasses.asdict(plan))
    if not plan.k:
        # An earlier run's confirmation judged another set of trials; it must not decide now.
        study.set_user_attr(SUMMARY_ATTR, None)
        study.set_user_attr(COST_ATTR, None)
        return None
    return confirm_candidates(study, ctx, plan.k, plan.by, progress)


def judging_order(study: optuna.Study, ctx: SearchContext) -> list[FrozenTrial]:
    """The candidates to judge, in order: smallest first for the floor; for `within_budget`,
    those within the budget, most accurate on validation first."""
    search = ctx.config.search
    if search.champion != "within_budget" or search.budget is None:
        return candidates(study)
    budget = search.budget.model_dump()
    inside = [
        t
        for t in pareto.complete_trials(study)
        if "repeat_of" not in t.user_attrs
        and not t.user_attrs.get("baseline")
        and fully_trained(t)
        and meets_budget(t, budget)
    ]
    sign = -1.0 if ctx.higher_is_better else 1.0
    return sorted(inside, key=lambda t: (sign * t.values[pareto.METRIC], t.values[pareto.SIZE]))


def confirm_candidates(
    study: optuna.Study, ctx: SearchContext, k: int, by: str = "folds", progress: bool = False
) -> pd.DataFrame:
    """Judge candidates `by` K folds or seeds, in `judging_order`, up to the first that passes
    (for the floor) or `search.confirm_limit` of them; store verdicts and cost, return a table."""
    started = time.perf_counter()
    order = judging_order(study, ctx)
    first_pass_ends = ctx.config.search.champion != "within_budget"
    limit = ctx.config.search.confirm_limit
    bar = tqdm(
        total=k * (1 + min(len(order), limit)),
        desc=f"confirming by {k} {by}",
        unit="fit",
        disable=not progress,
        dynamic_ncols=True,
    )
    judge: Judge = Folds(study, ctx, k, bar) if by == "folds" else Seeds(study, ctx, k, bar)
    summary: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []

    def passes(trial: FrozenTrial) -> bool:
        """Judge `trial` (a copy with its source first: its networks serve both)."""
        source = trial.user_attrs.get("variant_of")
        for member in ([study.trials[int(source)]] if source is not None else []) + [trial]:
            if str(member.number) in summary:
                continue
            if member is trial and source is not None:
                entry, row = judge.copy(trial, summary[str(source)])
            else:
                entry, row = judge.fp32(member)
            summary[str(member.number)] = entry
            rows.append(row)
        return bool(summary[str(trial.number)]["passed"])

    if first_pass_ends:
        judged = _smallest_passing(order, passes, limit)
    else:
        judged = len(order[:limit])
        for trial in order[:limit]:
            passes(trial)
    bar.total = bar.n
    bar.close()
    study.set_user_attr(SUMMARY_ATTR, summary)
    cost = {
        "candidates": judged,
        "of": len(order),
        "trainings": judge.trainings,
        "rejected_early": sum(bool(e.get("rejected_early")) for e in summary.values()),
        "seconds": time.perf_counter() - started,
    }
    study.set_user_attr(COST_ATTR, cost)
    columns = [*COLUMNS, *FOLD_COLUMNS] if by == "folds" else COLUMNS
    return pd.DataFrame(rows, columns=columns)


def _smallest_passing(
    order: list[FrozenTrial], passes: Callable[[FrozenTrial], bool], limit: int
) -> int:
    """Judge candidates, smallest first, for the smallest that passes; returns how many.

    Small candidates fail more often than large ones, and each failure costs up to K
    trainings, so the walk gallops: it judges positions 0, 1, 3, 7, 15, ... of the size order
    (and the largest), and once one passes it bisects back between it and the last failure.
    The candidate just smaller than the one found has then failed; a few smaller ones between
    galloping steps may be left unjudged, and the champion's note counts them. At most `limit`
    candidates are judged.
    """
    judged = 0

    def judge(index: int) -> bool:
        nonlocal judged
        judged += 1
        return passes(order[index])

    failed, found, index, step = -1, None, 0, 1
    while index < len(order) and judged < limit:
        if judge(index):
            found = index
            break
        failed, index, step = index, index + step, step * 2
    last = len(order) - 1
    if found is None and failed < last and judged < limit:
        found = last if judge(last) else None
        failed = failed if found is not None else last
    while found is not None and found - failed > 1 and judged < limit:
        middle = (failed + found) // 2
        if judge(middle):
            found = middle
        else:
            failed = middle
    return judged
