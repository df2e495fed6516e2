"""The certification step: candidates judged on rows no decision touched, for the smallest
that holds the floor.

Candidates are every finished trial and INT8 copy that could hold the floor
(`search.champion.candidates`), not only the front: a small network dominated on validation by
a lucky neighbour is often the one that holds. They are tested in a fixed sequence set before
any certification row is read (`search.front.certify`), so the family-wise error stays at the
one-sided 2.5% of each test.

- `holdout` (the default wherever the data has certification rows, `data.certify_fraction`):
  each candidate's stored scores on the certification rows against the baseline's. Nothing is
  trained, and the certificate is about the weights that are registered.
- `folds` (`search.confirm: K`, or `auto` where the certification rows are too few to certify
  the floor and folds over every training and validation row are expected to): per fold the
  baseline and the candidate train on the others, early-stopped on an inner split of their
  own, and every row is scored by networks that never saw it. This certifies the recipe (the
  shape trained this way), not the registered weights, and the report says so.
- `validation` (no certification rows): the validation intervals, which also selected; an
  optimistic promise, and the report says so.

`search.confirm_limit` bounds how many candidates are trained for folds; the cost is kept on
the study.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial
from tqdm import tqdm

from search.front import pareto
from search.front.certify import (
    Link,
    certification_chain,
    chance_of,
    holdout_entries,
    judge_chain,
    study_source,
)
from search.front.champion import candidates, meets_budget
from search.front.judges import COLUMNS, FOLD_COLUMNS, Folds
from search.study import (
    CERTIFY,
    ROWS_FILE,
    SearchContext,
    StudySettings,
    attributes,
    fully_trained,
    read_power,
)

# search.confirm: auto. Five folds, the usual choice for cross-validation. Below AUTO_MIN_ROWS
# training and validation rows the validation split is too small to project from (85 rows on
# which two networks agree give an interval of exactly 0), and folds measured on such tables
# could not resolve a 0.5-point floor either (bench/RESULTS.md, digits and breast_cancer).
AUTO_FOLDS = 5
AUTO_MIN_ROWS = 5_000


@dataclass(frozen=True)
class ConfirmPlan:
    """How candidates are certified after this search (`by`: "holdout", "folds" with `k`
    folds, or "validation"), and why; the rows of the validation split and of training plus
    validation, for the report's arithmetic."""

    k: int
    by: str
    reason: str
    val_rows: int = 0
    rows: int = 0
    certify_rows: int = 0


def plan_confirmation(study: optuna.Study, ctx: SearchContext) -> ConfirmPlan:
    """`search.confirm` as given: 0 certifies on the held-out rows (or, without any, on
    validation), K by K folds; `auto` as `auto_plan` decides."""
    search = ctx.config.search
    val_rows = len(ctx.data.val_frame)
    rows = len(ctx.data.train_frame) + val_rows
    certify_rows = len(ctx.data.certify_frame)

    def sized(plan: ConfirmPlan, reason: str | None = None) -> ConfirmPlan:
        return dataclasses.replace(
            plan,
            reason=plan.reason if reason is None else reason,
            val_rows=val_rows,
            rows=rows,
            certify_rows=certify_rows,
        )

    if search.confirm != "auto" and search.confirm > 0:
        return sized(ConfirmPlan(search.confirm, "folds", "search.confirm"))
    held_out = _held_out(certify_rows)
    if search.confirm == 0:
        return sized(held_out, "search.confirm: 0")
    statement = read_power(study)
    settings = StudySettings.read(study)
    half = pareto.validation_half_width(pareto.trial_table(study))
    if statement is not None and statement.rows and statement.can_certify:
        reason = f"auto: the {certify_rows} certification rows can certify the floor"
        return sized(ConfirmPlan(0, "holdout", reason))
    if half is None or settings.baseline_metric is None:
        reason = "auto: no trial has a validation interval to project folds from"
        return sized(held_out, reason)
    folds = auto_plan(
        half, settings.allowed_drop(), val_rows, rows, bool(ctx.config.data.time_column)
    )
    if folds.k:
        lead = f"auto: the {certify_rows} certification rows are too few; " if certify_rows else ""
        return sized(folds, lead + folds.reason)
    return sized(held_out, folds.reason)


def _held_out(certify_rows: int) -> ConfirmPlan:
    if certify_rows:
        return ConfirmPlan(0, "holdout", "")
    return ConfirmPlan(0, "validation", "")


def auto_plan(
    half: float, drop: float, val_rows: int, rows: int, time_ordered: bool
) -> ConfirmPlan:
    """Whether folds would certify where the held-out rows cannot: AUTO_FOLDS folds when the
    validation intervals' median half-width `half` is wider than the floor `drop`, and folds
    over all `rows` training and validation rows are expected to narrow it within the floor
    (a paired interval narrows with the square root of its rows), on at least AUTO_MIN_ROWS
    rows not ordered in time. `k` 0: no folds, and the reason."""
    if time_ordered:
        return ConfirmPlan(
            0,
            "holdout",
            "auto: no folds, data.time_column orders the rows, and "
            "folds dealt at random would train on later rows",
        )
    seen = f"the validation intervals (+/-{half:.4f}, median)"
    if half <= drop:
        return ConfirmPlan(
            0, "holdout", f"auto: folds not needed, {seen} resolve the floor ({drop:.4g})"
        )
    projected = half * math.sqrt(val_rows / rows)
    expected = f"{AUTO_FOLDS} folds over {rows} rows would give about +/-{projected:.4f}"
    if rows < AUTO_MIN_ROWS:
        return ConfirmPlan(
            0,
            "holdout",
            f"auto: no folds, {seen} are wider than the floor "
            f"({drop:.4g}), but {rows} rows are fewer than {AUTO_MIN_ROWS}, too few "
            "for folds to resolve it",
        )
    if projected > drop:
        return ConfirmPlan(
            0,
            "holdout",
            f"auto: no folds, {seen} are wider than the floor "
            f"({drop:.4g}) and {expected}, still wider",
        )
    return ConfirmPlan(
        AUTO_FOLDS, "folds", f"{seen} are wider than the floor ({drop:.4g}); {expected}"
    )


def confirm_search(
    study: optuna.Study, ctx: SearchContext, progress: bool = False
) -> pd.DataFrame | None:
    """The certification step after a finished search, as `plan_confirmation` decides it; the
    plan and the cost are kept on the study for the report. Returns the table, or None."""
    plan = plan_confirmation(study, ctx)
    attributes.write_confirm_plan(study, dataclasses.asdict(plan))
    if plan.by == "holdout":
        return certify_holdout(study, ctx)
    if plan.by == "validation":
        # An earlier run's certification judged another set of trials; it must not decide now.
        attributes.write_confirmation(study, None)
        attributes.write_confirm_cost(study, None)
        return None
    return confirm_candidates(study, ctx, plan.k, plan.by, progress)


def judging_order(study: optuna.Study, ctx: SearchContext) -> list[FrozenTrial]:
    """The candidates to judge, in order: smallest first for the floor; for `within_budget`,
    those within the budget, most accurate on validation first."""
    search = ctx.config.search
    if not search.champion.needs_budget or search.budget is None:
        return candidates(study)
    budget: dict[str, float | None] = search.budget.model_dump()
    inside = [
        t
        for t in pareto.complete_trials(study)
        if not attributes.is_repeat(t)
        and not attributes.is_baseline(t)
        and fully_trained(t)
        and meets_budget(t, budget)
    ]
    sign = -1.0 if ctx.higher_is_better else 1.0
    return sorted(inside, key=lambda t: (sign * t.values[pareto.METRIC], t.values[pareto.SIZE]))


def confirm_candidates(
    study: optuna.Study, ctx: SearchContext, k: int, by: str = "folds", progress: bool = False
) -> pd.DataFrame:
    """Judge candidates by K folds: for the floor, along the fixed sequence
    (`certification_chain`) up to its first failure, at most `search.confirm_limit` of them;
    for `within_budget`, the most accurate first, up to the limit. Stores verdicts and cost,
    returns a table."""
    started = time.perf_counter()
    order = judging_order(study, ctx)
    limit = ctx.config.search.confirm_limit
    if ctx.config.search.champion.needs_budget:
        walk = order[:limit]
    else:
        walk = [link.trial for link in _chain(study, ctx, order, folds=True, limit=limit)]
    bar = tqdm(
        total=k * (1 + len(walk)),
        desc=f"certifying by {k} {by}",
        unit="fit",
        disable=not progress,
        dynamic_ncols=True,
    )
    judge = Folds(study, ctx, k, bar)
    summary: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []

    def passes(trial: FrozenTrial) -> bool:
        """Judge `trial` (a copy with its source first: its networks serve both)."""
        source = attributes.variant_of(trial)
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

    judged = 0
    for trial in walk:
        judged += 1
        if not passes(trial) and not ctx.config.search.champion.needs_budget:
            break  # the fixed sequence ends at its first failure
    bar.total = bar.n
    bar.close()
    attributes.write_confirmation(study, summary)
    cost = {
        "candidates": judged,
        "of": len(order),
        "chain": len(walk),
        "trainings": judge.trainings,
        "rejected_early": sum(bool(e.get("rejected_early")) for e in summary.values()),
        "seconds": time.perf_counter() - started,
    }
    attributes.write_confirm_cost(study, cost)
    return pd.DataFrame(rows, columns=[*COLUMNS, *FOLD_COLUMNS])


def _chain(
    study: optuna.Study,
    ctx: SearchContext,
    order: list[FrozenTrial],
    folds: bool,
    limit: int | None = None,
) -> list[Link]:
    """The fixed sequence, projected to the rows it will be judged on: the certification
    rows, or (`folds`) every training and validation row; at most `limit` long, chosen as the
    best chain of that length rather than a longer one cut short."""
    settings = StudySettings.read(study)
    data = ctx.data
    val_rows = len(data.val_frame)
    judged_rows = len(data.train_frame) + val_rows if folds else len(data.certify_frame)
    base = pareto.baseline_trial(study, pareto.complete_trials(study))
    size = base.values[pareto.SIZE] if base is not None else math.inf
    chance = chance_of(settings, val_rows, judged_rows, study)
    return certification_chain(order, size, chance, limit=limit)


def certify_holdout(study: optuna.Study, ctx: SearchContext) -> pd.DataFrame:
    """Judge candidates on the certification rows, along the fixed sequence (for the floor)
    or, for `within_budget`, the most accurate candidate within the budget on validation, alone;
    store verdicts and cost."""
    started = time.perf_counter()
    settings = StudySettings.read(study)
    order = judging_order(study, ctx)
    budget = ctx.config.search.champion.needs_budget
    # within_budget: the most accurate within the budget by validation, and only it, is
    # certified; choosing among several by their certification rows would select on them.
    chain = (
        [Link(t, math.nan) for t in order[:1]] if budget else _chain(study, ctx, order, folds=False)
    )

    def rows_of(trial: FrozenTrial) -> np.ndarray:
        with np.load(ctx.network_dir(study, trial.number) / ROWS_FILE) as stored:
            return stored[CERTIFY]

    assert settings.baseline_trial is not None, "certified only after the baseline finished"
    baseline = study.trials[settings.baseline_trial]
    verdicts = judge_chain(
        chain,
        rows_of,
        rows_of(baseline),
        settings,
        study_source(study),
        seed=ctx.config.search.seed,
        stop_at_failure=not budget,
    )
    summary, table = holdout_entries(chain, verdicts)
    attributes.write_confirmation(study, summary)
    cost = {
        "candidates": len(verdicts),
        "of": len(order),
        "chain": len(chain),
        "trainings": 0,
        "seconds": time.perf_counter() - started,
    }
    attributes.write_confirm_cost(study, cost)
    return table
