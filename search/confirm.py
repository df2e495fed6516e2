"""The confirmation step (`search.confirm: K`): front members trained again before the champion.

- `search.confirm_by: seeds`: one training run is one draw, and a small network's validation
  metric moves with its seed by about as much as the floor allows. Every front member is trained
  again from the same candidate (its widths from scratch, or its pruning plan on the same
  baseline) under K other seeds; a candidate passes when its mean validation delta over all
  runs lies within the floor, and its single-split interval did too.
- `search.confirm_by: folds`: a validation split of a few thousand rows gives a paired interval
  wider than a 0.5-point floor, so which small network clears it is mostly luck. The training
  and validation rows are dealt into K folds (`TabularDataModule.refolded`); per fold the
  baseline and every front member are trained on the others, and each row is scored by the
  networks that did not see it. A candidate passes when its paired 95% interval over all those
  rows lies within the floor: the confident champion's rule, on every training and validation
  row instead of the validation split alone.

The table reports the spread; `pareto.champion` picks among the candidates that passed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from torch import nn
from tqdm import tqdm

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import evaluate_network, row_scores
from lightning_modules.family import TabularNetwork
from lightning_modules.networks import build, spec_from_dict
from lightning_modules.training import fit
from pruning.plan import PruningPlan, apply_plan
from search import pareto
from search.adapters import fit_settings
from search.objective import SearchContext, load_baseline
from search.study_settings import StudySettings
from search.uncertainty import paired_delta

# search.confirm: auto. Five folds, the usual choice for cross-validation. Below AUTO_MIN_ROWS
# training and validation rows the validation split is too small to project from (85 rows on
# which two networks agree give an interval of exactly 0), and folds measured on such tables
# could not resolve a 0.5-point floor either (bench/RESULTS.md, digits and breast_cancer).
AUTO_FOLDS = 5
AUTO_MIN_ROWS = 5_000

# Study attributes: each retrained run by "trial:seed" (so a resumed study trains none twice),
# and the summary per trial that `pareto.champion` reads.
RUNS_ATTR = "tabslim_confirm_runs"
SUMMARY_ATTR = pareto.CONFIRMATION_ATTR

COLUMNS = [
    "trial", "approach", "widths", "runs", "val_mean", "val_std", "val_min", "val_max",
    "val_delta_mean", "test_mean", "test_std", "passed",
]  # fmt: skip
# By folds also: the rows the out-of-fold interval rests on, and the interval.
FOLD_COLUMNS = ["cv_rows", "cv_delta_ci_low", "cv_delta_ci_high"]


def _retrain(
    trial: optuna.trial.FrozenTrial, study: optuna.Study, ctx: SearchContext, seed: int
) -> dict[str, float]:
    """The trial's candidate trained again with `seed`: its val and test metric."""
    fitting = dataclasses.replace(fit_settings(ctx.config), seed=seed)
    params = trial.params
    if trial.user_attrs.get("approach") == "prune":
        plan = PruningPlan.from_dict(trial.user_attrs["plan"])
        result = apply_plan(
            load_baseline(ctx, StudySettings.read(study), study),
            plan,
            data=ctx.data,
            fit_settings=fitting,
            seed=seed,
        )
        network: nn.Module = result.network
        val = result.val_metrics[ctx.metric]
    else:
        spec = spec_from_dict(trial.user_attrs["spec"])
        fitting = dataclasses.replace(
            fitting,
            lr=params.get("lr", fitting.lr),
            weight_decay=params.get("weight_decay", fitting.weight_decay),
        )
        trained = fit(build(spec, seed=seed), ctx.data, fitting, evaluate_test=False)
        assert isinstance(trained.network, TabularNetwork)
        network, val = trained.network, trained.val_metrics[ctx.metric]
    return {"val": val, "test": evaluate_network(network, ctx.data, "test")[ctx.metric]}


def _fold_member(
    trial: optuna.trial.FrozenTrial, data: TabularDataModule, baseline: nn.Module, fitting: Any
) -> nn.Module:
    """The trial's candidate trained on one fold's training rows."""
    if trial.user_attrs.get("approach") == "prune":
        plan = PruningPlan.from_dict(trial.user_attrs["plan"])
        return apply_plan(
            baseline, plan, data=data, fit_settings=fitting, seed=fitting.seed
        ).network
    # The fold's preprocessing may see other categories: its input widths, the trial's widths.
    spec = dataclasses.replace(spec_from_dict(trial.user_attrs["spec"]), **data.network_inputs())
    params = trial.params
    fitting = dataclasses.replace(
        fitting,
        lr=params.get("lr", fitting.lr),
        weight_decay=params.get("weight_decay", fitting.weight_decay),
    )
    return fit(build(spec, seed=fitting.seed), data, fitting, evaluate_test=False).network


@dataclass(frozen=True)
class ConfirmPlan:
    """How the front is confirmed after this search (`k` 0: not at all), and why."""

    k: int
    by: str
    reason: str


def plan_confirmation(study: optuna.Study, ctx: SearchContext) -> ConfirmPlan:
    """`search.confirm` as given, or what `auto_plan` decides for `auto`."""
    search = ctx.config.search
    if search.confirm != "auto":
        return ConfirmPlan(search.confirm, search.confirm_by or "seeds", "search.confirm")
    settings = StudySettings.read(study)
    half = pareto.validation_half_width(pareto.trial_table(study))
    if half is None or settings.baseline_metric is None:
        return ConfirmPlan(0, "folds", "auto: no trial has a validation interval to judge by")
    return auto_plan(
        half, settings.allowed_drop(), len(ctx.data.val_frame),
        len(ctx.data.train_frame) + len(ctx.data.val_frame), bool(ctx.config.data.time_column),
    )  # fmt: skip


def auto_plan(
    half: float, drop: float, val_rows: int, rows: int, time_ordered: bool
) -> ConfirmPlan:
    """`search.confirm: auto`: AUTO_FOLDS folds when the validation intervals' median
    half-width `half` is wider than the floor `drop`, and folds over all `rows` training and
    validation rows are expected to narrow it within the floor (a paired interval narrows with
    the square root of its rows), on at least AUTO_MIN_ROWS rows not ordered in time."""
    if time_ordered:
        return ConfirmPlan(0, "folds", "auto: skipped, data.time_column orders the rows, and "
                           "folds dealt at random would train on later rows")  # fmt: skip
    seen = f"the validation intervals (+/-{half:.4f}, median)"
    if half <= drop:
        return ConfirmPlan(0, "folds", f"auto: not needed, {seen} resolve the floor ({drop:.4g})")
    projected = half * math.sqrt(val_rows / rows)
    expected = f"{AUTO_FOLDS} folds over {rows} rows would give about +/-{projected:.4f}"
    if rows < AUTO_MIN_ROWS:
        return ConfirmPlan(0, "folds", f"auto: skipped, {seen} are wider than the floor "
                           f"({drop:.4g}), but {rows} rows are fewer than {AUTO_MIN_ROWS}, too few "
                           "for folds to resolve it")  # fmt: skip
    if projected > drop:
        return ConfirmPlan(0, "folds", f"auto: skipped, {seen} are wider than the floor "
                           f"({drop:.4g}) and {expected}, still wider")  # fmt: skip
    return ConfirmPlan(AUTO_FOLDS, "folds", f"auto: {seen} are wider than the floor "
                       f"({drop:.4g}); {expected}")  # fmt: skip


def confirm_search(
    study: optuna.Study, ctx: SearchContext, progress: bool = False
) -> pd.DataFrame | None:
    """The confirmation step after a finished search, as `plan_confirmation` decides it; the
    plan is kept on the study for the report. Returns the table, or None when none ran."""
    plan = plan_confirmation(study, ctx)
    if not plan.k:
        study.set_user_attr(pareto.CONFIRM_PLAN_ATTR, dataclasses.asdict(plan))
        # An earlier run's confirmation judged another front; it must not filter this one.
        study.set_user_attr(SUMMARY_ATTR, None)
        return None
    return confirm_front(study, ctx, plan.k, plan.by, progress, plan.reason)


def _members_in_champion_order(
    study: optuna.Study, members: list[optuna.trial.FrozenTrial]
) -> list[optuna.trial.FrozenTrial]:
    """The members that could become champion, in the order the champion is picked: each at
    its smallest candidate, itself or an INT8 copy of it that is feasible on its own."""
    by_number = {t.number: t for t in members}
    ordered: dict[int, optuna.trial.FrozenTrial] = {}
    for candidate in pareto.smaller_feasible(study):
        source = int(candidate.user_attrs.get("variant_of", candidate.number))
        if source in by_number:
            ordered.setdefault(source, by_number[source])
    return list(ordered.values())


def _confirm_by_folds(
    study: optuna.Study, ctx: SearchContext, k: int, members: list[optuna.trial.FrozenTrial],
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Out-of-fold paired intervals against the baseline; see the module docstring.

    Members are confirmed in the champion's order and the first that passes ends it: every
    later member is larger, so it could not be champion, and each costs K more trainings.
    """
    settings = StudySettings.read(study)
    fitting = fit_settings(ctx.config)
    order = _members_in_champion_order(study, members)
    if not order:
        return {}, []
    bar = tqdm(
        total=k * (1 + len(order)), desc=f"confirming by {k} folds", unit="fit",
        disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    folds: list[tuple[TabularDataModule, nn.Module]] = []
    for fold in range(k):
        data = ctx.data.refolded(fold, k, seed=ctx.config.data.seed)
        # Every kind's spec is a frozen dataclass with the network_inputs() fields.
        base_spec = dataclasses.replace(ctx.baseline, **data.network_inputs())  # type: ignore[type-var]
        folds.append((data, fit(build(base_spec, seed=fitting.seed), data, fitting,
                                evaluate_test=False).network))  # fmt: skip
        bar.update()
    baseline_all = np.concatenate([row_scores(net, data, "val") for data, net in folds])
    summary, table = {}, []
    for trial in order:
        rows, vals, tests = [], [], []
        for data, baseline in folds:
            network = _fold_member(trial, data, baseline, fitting)
            rows.append(row_scores(network, data, "val"))
            vals.append(evaluate_network(network, data, "val")[ctx.metric])
            tests.append(evaluate_network(network, data, "test")[ctx.metric])
            bar.update()
        delta = paired_delta(np.concatenate(rows), baseline_all, ctx.metric,
                             seed=ctx.config.search.seed)  # fmt: skip
        passed = settings.is_confident(delta.low, delta.high)
        summary[str(trial.number)] = {"runs": k, "val_delta_mean": delta.delta, "passed": passed,
                                      "by": "folds", "cv_delta_ci_low": delta.low,
                                      "cv_delta_ci_high": delta.high}  # fmt: skip
        table.append(_row(trial, vals, tests, delta.delta, passed)
                     | {"cv_rows": len(baseline_all), "cv_delta_ci_low": delta.low,
                        "cv_delta_ci_high": delta.high})  # fmt: skip
        if passed:
            break
    bar.total = bar.n
    bar.close()
    return summary, table


def _row(
    trial: optuna.trial.FrozenTrial, vals: list[float], tests: list[float], delta: float,
    passed: bool,
) -> dict[str, Any]:  # fmt: skip
    return {
        "trial": trial.number,
        "approach": trial.user_attrs.get("approach", ""),
        "widths": "-".join(map(str, trial.user_attrs.get("hidden", []))),
        "runs": len(vals),
        "val_mean": statistics.fmean(vals),
        "val_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "val_min": min(vals),
        "val_max": max(vals),
        "val_delta_mean": delta,
        "test_mean": statistics.fmean(tests),
        "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "passed": passed,
    }


def _fp32_members(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The front's trials, a quantized variant's source in its place (it is the one trained)."""
    members: dict[int, optuna.trial.FrozenTrial] = {}
    for trial in pareto.front(study):
        source = trial.user_attrs.get("variant_of")
        chosen = trial if source is None else study.trials[int(source)]
        members.setdefault(chosen.number, chosen)
    return sorted(members.values(), key=lambda t: t.number)


def confirm_front(
    study: optuna.Study, ctx: SearchContext, k: int, by: str = "seeds", progress: bool = False,
    reason: str = "search.confirm",
) -> pd.DataFrame:  # fmt: skip
    """Train front members again (`by` seeds or folds); store and return the spread."""
    study.set_user_attr(pareto.CONFIRM_PLAN_ATTR, dataclasses.asdict(ConfirmPlan(k, by, reason)))
    settings = StudySettings.read(study)
    members = [
        t for t in _fp32_members(study)
        if not t.user_attrs.get("baseline") and settings.baseline_metric is not None
    ]  # fmt: skip
    if by == "folds":
        summary, rows = _confirm_by_folds(study, ctx, k, members, progress)
        study.set_user_attr(SUMMARY_ATTR, summary)
        return pd.DataFrame(rows, columns=[*COLUMNS, *FOLD_COLUMNS])
    runs: dict[str, dict[str, float]] = dict(study.user_attrs.get(RUNS_ATTR, {}))
    summary = {}
    rows = []
    first_seed = ctx.config.training.seed + 1
    for trial in members:
        metrics = trial.user_attrs["metrics"]
        vals, tests = [metrics[f"val_{ctx.metric}"]], [metrics[f"test_{ctx.metric}"]]
        for seed in range(first_seed, first_seed + k):
            key = f"{trial.number}:{seed}"
            if key not in runs:
                runs[key] = _retrain(trial, study, ctx, seed)
                study.set_user_attr(RUNS_ATTR, runs)
            vals.append(runs[key]["val"])
            tests.append(runs[key]["test"])
        base = float(settings.baseline_metric or 0.0)  # members exist only when it is known
        delta = statistics.fmean(vals) - base
        passed = settings.violation(base + delta) <= 0
        summary[str(trial.number)] = {"runs": len(vals), "val_delta_mean": delta, "passed": passed}
        rows.append(_row(trial, vals, tests, delta, passed))
    study.set_user_attr(SUMMARY_ATTR, summary)
    return pd.DataFrame(rows, columns=COLUMNS)
