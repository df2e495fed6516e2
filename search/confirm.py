"""The confirmation step: candidates judged again, smallest first, before the champion is named.

Candidates are every finished trial and INT8 copy that could hold the floor
(`search.champion.candidates`), not only the front: a small network dominated on validation by
a lucky neighbour is often the one that holds. They are judged in the champion's order, and the
first that passes ends the step, since every later one is larger.

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
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial
from torch import nn
from tqdm import tqdm

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import evaluate_network, output_row_scores, row_scores
from lightning_modules.networks import build, spec_from_dict
from lightning_modules.training import FitSettings, fit
from pruning.plan import PruningPlan, apply_plan
from search import champion, pareto
from search.adapters import fit_settings
from search.objective import SearchContext, load_baseline, scratch_settings
from search.study_settings import StudySettings
from search.uncertainty import PairedDelta, paired_delta

# search.confirm: auto. Five folds, the usual choice for cross-validation. Below AUTO_MIN_ROWS
# training and validation rows the validation split is too small to project from (85 rows on
# which two networks agree give an interval of exactly 0), and folds measured on such tables
# could not resolve a 0.5-point floor either (bench/RESULTS.md, digits and breast_cancer).
AUTO_FOLDS = 5
AUTO_MIN_ROWS = 5_000
# Folds seen before a candidate may be rejected early: one fold's rows are too few to judge.
EARLY_REJECT_AFTER = 2

# Study attributes: each retrained run by "trial:seed" (so a resumed study trains none twice),
# and the verdict per trial that `search.champion` reads.
RUNS_ATTR = "tabslim_confirm_runs"
SUMMARY_ATTR = pareto.CONFIRMATION_ATTR

COLUMNS = [
    "trial", "approach", "precision", "widths", "runs", "val_mean", "val_std", "val_min",
    "val_max", "val_delta_mean", "test_mean", "test_std", "passed", "reason",
]  # fmt: skip
# By folds also: the rows the out-of-fold interval rests on, and the interval.
FOLD_COLUMNS = ["cv_rows", "cv_delta_ci_low", "cv_delta_ci_high"]


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
    plan and the cost are kept on the study for the report. Returns the table, or None."""
    plan = plan_confirmation(study, ctx)
    study.set_user_attr(pareto.CONFIRM_PLAN_ATTR, dataclasses.asdict(plan))
    if not plan.k:
        # An earlier run's confirmation judged another set of trials; it must not decide now.
        study.set_user_attr(SUMMARY_ATTR, None)
        study.set_user_attr(champion.COST_ATTR, None)
        return None
    return confirm_candidates(study, ctx, plan.k, plan.by, progress)


def judging_order(study: optuna.Study, ctx: SearchContext) -> list[FrozenTrial]:
    """The candidates to judge, in order: smallest first for the floor; for `within_budget`,
    those within the budget, most accurate on validation first."""
    search = ctx.config.search
    if search.champion != "within_budget" or search.budget is None:
        return champion.candidates(study)
    budget = search.budget.model_dump()
    inside = [
        t
        for t in pareto.complete_trials(study)
        if "repeat_of" not in t.user_attrs
        and not t.user_attrs.get("baseline")
        and champion.meets_budget(t, budget)
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
        total=k * (1 + min(len(order), limit)), desc=f"confirming by {k} {by}", unit="fit",
        disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    judge: _Judge = _Folds(study, ctx, k, bar) if by == "folds" else _Seeds(study, ctx, k, bar)
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
    study.set_user_attr(champion.COST_ATTR, cost)
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


def rejects_early(delta: PairedDelta, settings: StudySettings, folds_seen: int, k: int) -> bool:
    """Whether a candidate can be dropped before its last fold: after `EARLY_REJECT_AFTER`
    folds its running out-of-fold interval lies wholly outside the floor, so more folds would
    only narrow an interval that already fails. One that still straddles the floor goes on."""
    if not EARLY_REJECT_AFTER <= folds_seen < k:
        return False
    drop = settings.allowed_drop()
    return delta.high < -drop if settings.higher_is_better else delta.low > drop


class _Judge:
    trainings = 0

    def fp32(self, trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def copy(
        self, trial: FrozenTrial, source: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError


def _member(
    trial: FrozenTrial, data: TabularDataModule, baseline: nn.Module, fitting: FitSettings,
    config: Any,
) -> nn.Module:  # fmt: skip
    """The trial's candidate trained again on `data`: its pruning plan applied to `baseline`,
    or its widths from scratch (with `data`'s input widths: a fold may see other categories)."""
    if trial.user_attrs.get("approach") == "prune":
        plan = PruningPlan.from_dict(trial.user_attrs["plan"])
        return apply_plan(
            baseline, plan, data=data, fit_settings=fitting, seed=fitting.seed
        ).network
    spec = dataclasses.replace(spec_from_dict(trial.user_attrs["spec"]), **data.network_inputs())
    settings = dataclasses.replace(scratch_settings(config, trial.params), seed=fitting.seed)
    return fit(build(spec, seed=fitting.seed), data, settings, evaluate_test=False).network


class _Folds(_Judge):
    """Out-of-fold judging; fold data, baselines and candidates' networks are made on demand
    and kept, so a copy reuses its source's networks and a rejected candidate costs less."""

    def __init__(self, study: optuna.Study, ctx: SearchContext, k: int, bar: tqdm) -> None:
        self.study, self.ctx, self.k, self.bar = study, ctx, k, bar
        self.settings = StudySettings.read(study)
        self.fitting = fit_settings(ctx.config)
        self.trainings = 0
        self._data: dict[int, TabularDataModule] = {}
        self._baselines: dict[int, tuple[nn.Module, np.ndarray]] = {}
        self._networks: dict[tuple[int, int], nn.Module] = {}

    def _fold(self, fold: int) -> tuple[TabularDataModule, nn.Module, np.ndarray]:
        if fold not in self._data:
            self._data[fold] = self.ctx.data.refolded(fold, self.k, seed=self.ctx.config.data.seed)
        data = self._data[fold]
        if fold not in self._baselines:
            # Every kind's spec is a frozen dataclass with the network_inputs() fields.
            spec = dataclasses.replace(self.ctx.baseline, **data.network_inputs())  # type: ignore[type-var]
            network = fit(
                build(spec, seed=self.fitting.seed), data, self.fitting, evaluate_test=False
            ).network
            self._baselines[fold] = (network, row_scores(network, data, "val"))
            self._trained()
        return data, *self._baselines[fold]

    def _trained(self) -> None:
        self.trainings += 1
        self.bar.update()

    def _network(self, trial: FrozenTrial, fold: int) -> nn.Module:
        data, baseline, _ = self._fold(fold)
        key = (trial.number, fold)
        if key not in self._networks:
            self._networks[key] = _member(trial, data, baseline, self.fitting, self.ctx.config)
            self._trained()
        return self._networks[key]

    def _judge(
        self, trial: FrozenTrial, rows_of: Callable[[nn.Module, TabularDataModule], np.ndarray]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        rows, base_rows, vals, tests = [], [], [], []
        metric, seed = self.ctx.metric, self.ctx.config.search.seed
        source = self.study.trials[int(trial.user_attrs.get("variant_of", trial.number))]
        # A copy's own metrics per fold would need its graph on the test rows too; its rows
        # decide, and the table shows the source's fold metrics only for fp32 members.
        own = source is trial
        delta: PairedDelta | None = None
        rejected = False
        for fold in range(self.k):
            data, _, baseline_rows = self._fold(fold)
            network = self._network(source, fold)
            rows.append(rows_of(network, data))
            base_rows.append(baseline_rows)
            if own:
                vals.append(evaluate_network(network, data, "val")[metric])
                tests.append(evaluate_network(network, data, "test")[metric])
            delta = paired_delta(np.concatenate(rows), np.concatenate(base_rows), metric, seed=seed)
            if rejects_early(delta, self.settings, fold + 1, self.k):
                rejected = True
                break
        assert delta is not None
        passed = not rejected and self.settings.is_confident(delta.low, delta.high)
        reason = f"rejected after {len(rows)} of {self.k} folds, wholly outside" if rejected else ""
        cv_rows = int(sum(len(r) for r in rows))
        entry = {
            "runs": len(rows), "by": "folds", "val_delta_mean": delta.delta, "passed": passed,
            "cv_delta_ci_low": delta.low, "cv_delta_ci_high": delta.high, "cv_rows": cv_rows,
            "rejected_early": rejected, "reason": reason,
        }  # fmt: skip
        row = _row(trial, vals or [math.nan], tests or [math.nan], delta.delta, passed, reason)
        row |= {
            "cv_rows": cv_rows, "cv_delta_ci_low": delta.low, "cv_delta_ci_high": delta.high,
        }  # fmt: skip
        return entry, row

    def fp32(self, trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._judge(trial, lambda network, data: row_scores(network, data, "val"))

    def copy(
        self, trial: FrozenTrial, source: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        precision = str(trial.user_attrs.get("precision"))
        threads = self.ctx.config.measure.threads
        entry, row = self._judge(
            trial, lambda network, data: _quantized_rows(network, data, precision, threads)
        )
        if entry["passed"] and not source["passed"]:
            reason = f"its source, trial {trial.user_attrs['variant_of']}, does not hold"
            entry, row = entry | {"passed": False, "reason": reason}, row | {
                "passed": False, "reason": reason,
            }  # fmt: skip
        return entry, row


def _quantized_rows(
    network: nn.Module, data: TabularDataModule, precision: str, threads: int
) -> np.ndarray:
    """The per-row scores of `network`'s `precision` copy on `data`'s validation rows, made as
    the search makes its INT8 copies (`search.quantized`)."""
    from search.export import export_onnx
    from search.quantized import graph_outputs, quantize

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(network, Path(tmp) / "fp32.onnx")
        graph = quantize(fp32, Path(tmp) / "int8.onnx", precision, data.tensors["train"])
        return output_row_scores(graph_outputs(graph, data, "val", threads), data, "val")


class _Seeds(_Judge):
    """Judging under more seeds: the candidate trained again K times on the same split."""

    def __init__(self, study: optuna.Study, ctx: SearchContext, k: int, bar: tqdm) -> None:
        self.study, self.ctx, self.k, self.bar = study, ctx, k, bar
        self.settings = StudySettings.read(study)
        self.trainings = 0

    def _retrain(self, trial: FrozenTrial, seed: int) -> dict[str, float]:
        fitting = dataclasses.replace(fit_settings(self.ctx.config), seed=seed)
        baseline = load_baseline(self.ctx, self.settings, self.study)
        network = _member(trial, self.ctx.data, baseline, fitting, self.ctx.config)
        metric = self.ctx.metric
        return {
            "val": evaluate_network(network, self.ctx.data, "val")[metric],
            "test": evaluate_network(network, self.ctx.data, "test")[metric],
        }

    def fp32(self, trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
        runs: dict[str, dict[str, float]] = dict(self.study.user_attrs.get(RUNS_ATTR, {}))
        metrics = trial.user_attrs["metrics"]
        metric = self.ctx.metric
        vals, tests = [metrics[f"val_{metric}"]], [metrics[f"test_{metric}"]]
        first_seed = self.ctx.config.training.seed + 1
        for seed in range(first_seed, first_seed + self.k):
            key = f"{trial.number}:{seed}"
            if key not in runs:
                runs[key] = self._retrain(trial, seed)
                self.study.set_user_attr(RUNS_ATTR, runs)
                self.trainings += 1
            self.bar.update()
            vals.append(runs[key]["val"])
            tests.append(runs[key]["test"])
        base = float(self.settings.baseline_metric or 0.0)  # judged only once it is known
        delta = statistics.fmean(vals) - base
        split = champion.split_verdict(trial, self.settings)
        passed = self.settings.violation(base + delta) <= 0 and bool(split.passed)
        reason = "" if passed or split.passed else "its validation interval crosses the floor"
        entry = {"runs": len(vals), "by": "seeds", "val_delta_mean": delta, "passed": passed,
                 "reason": reason}  # fmt: skip
        return entry, _row(trial, vals, tests, delta, passed, reason)

    def copy(
        self, trial: FrozenTrial, source: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        split = champion.split_verdict(trial, self.settings)
        passed = bool(source["passed"]) and bool(split.passed)
        reason = "" if passed else "it or its source does not hold"
        entry = {"runs": source["runs"], "by": "seeds", "val_delta_mean": split.delta,
                 "passed": passed, "reason": reason}  # fmt: skip
        metrics = trial.user_attrs["metrics"]
        metric = self.ctx.metric
        vals, tests = [metrics[f"val_{metric}"]], [metrics[f"test_{metric}"]]
        return entry, _row(trial, vals, tests, split.delta, passed, reason)


def _row(
    trial: FrozenTrial, vals: list[float], tests: list[float], delta: float, passed: bool,
    reason: str = "",
) -> dict[str, Any]:  # fmt: skip
    return {
        "trial": trial.number,
        "approach": trial.user_attrs.get("approach", ""),
        "precision": trial.user_attrs.get("precision", "fp32"),
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
        "reason": reason,
    }
