"""How one candidate is judged by cross-fitting: out-of-fold against the fold's baseline.

`search.front.confirm` decides which candidates, and in which order; the judge trains what one
verdict needs and returns it as a study entry and a table row.

The training and validation rows are dealt into K folds; per fold the baseline and the
candidate train on the others, early-stopped on an inner split of those
(`TabularDataModule.refolded`), and every row is scored by networks that neither saw it nor
stopped on it. Fold data, baselines and candidates' networks are made on demand and kept, so
an INT8 copy reuses its source's networks (quantized the way the search quantizes) and a
candidate rejected early costs less. The verdict is the one-sided test of
`search.measure.noninferiority` on every out-of-fold row: it certifies the recipe, since the
registered weights are not among the networks scored.

Retraining under more seeds on the same split (`confirm_by: seeds`) was removed: it judged a
candidate again on the rows that had selected it, and without the baseline's own seeds.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn
from tqdm import tqdm

from lightning_modules.data import TabularDataModule
from lightning_modules.distillation import teacher_outputs
from lightning_modules.evaluation import evaluate_network, output_row_scores, row_scores
from lightning_modules.networks import build, spec_from_dict
from lightning_modules.training import FitSettings, fit
from pruning.plan import PruningPlan, apply_plan
from search.inputs import fit_settings
from search.measure import PairedDelta, noninferiority, paired_delta
from search.study import SearchContext, StudySettings, attributes, scratch_settings

__all__ = ["COLUMNS", "FOLD_COLUMNS", "Folds", "rejects_early"]

# A fold's held-out rows: `TabularDataModule.refolded` deals them as its "certify" split.
HELD_OUT = "certify"
# Folds seen before a candidate may be rejected early: one fold's rows are too few to judge.
EARLY_REJECT_AFTER = 2

COLUMNS = [
    "trial",
    "approach",
    "precision",
    "widths",
    "runs",
    "val_mean",
    "val_std",
    "val_min",
    "val_max",
    "val_delta_mean",
    "test_mean",
    "test_std",
    "passed",
    "reason",
]
# By folds also: the rows the out-of-fold interval rests on, and the interval.
FOLD_COLUMNS = ["cv_rows", "cv_delta_ci_low", "cv_delta_ci_high"]


def rejects_early(delta: PairedDelta, settings: StudySettings, folds_seen: int, k: int) -> bool:
    """Whether a candidate can be dropped before its last fold: after `EARLY_REJECT_AFTER`
    folds its running out-of-fold interval lies wholly outside the floor, so more folds would
    only narrow an interval that already fails. One that still straddles the floor goes on."""
    if not EARLY_REJECT_AFTER <= folds_seen < k:
        return False
    drop = settings.allowed_drop()
    return delta.high < -drop if settings.higher_is_better else delta.low > drop


def _member(
    trial: FrozenTrial,
    data: TabularDataModule,
    baseline: nn.Module,
    fitting: FitSettings,
    config: Any,
    teacher: Callable[[], torch.Tensor],
) -> nn.Module:
    """The trial's candidate trained again on `data`: its pruning plan applied to `baseline`,
    or its widths from scratch (with `data`'s input widths: a fold may see other categories),
    distilled from `teacher()` (`baseline`'s outputs on `data`) for a distill trial."""
    approach = attributes.approach(trial)
    if approach == "prune":
        stored = attributes.plan_dict(trial)
        assert stored is not None, "a prune trial stores its plan"
        plan = PruningPlan.from_dict(stored)
        return apply_plan(
            baseline, plan, data=data, fit_settings=fitting, seed=fitting.seed
        ).network
    spec = dataclasses.replace(spec_from_dict(attributes.spec_dict(trial)), **data.network_inputs())
    distill = approach == "distill"
    settings = scratch_settings(config, trial.params, distill=distill)
    settings = dataclasses.replace(settings, seed=fitting.seed)
    return fit(
        build(spec, seed=fitting.seed),
        data,
        settings,
        evaluate_test=False,
        teacher=teacher() if distill else None,
    ).network


class Folds:
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
        self._teachers: dict[int, torch.Tensor] = {}

    def _teacher(self, fold: int) -> torch.Tensor:
        """The fold baseline's outputs on the fold's training rows, once per fold."""
        if fold not in self._teachers:
            data, baseline, _ = self._fold(fold)
            self._teachers[fold] = teacher_outputs(baseline, data)
        return self._teachers[fold]

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
            self._baselines[fold] = (network, row_scores(network, data, HELD_OUT))
            self._trained()
        return data, *self._baselines[fold]

    def _trained(self) -> None:
        self.trainings += 1
        self.bar.update()

    def _network(self, trial: FrozenTrial, fold: int) -> nn.Module:
        data, baseline, _ = self._fold(fold)
        key = (trial.number, fold)
        if key not in self._networks:
            self._networks[key] = _member(
                trial,
                data,
                baseline,
                self.fitting,
                self.ctx.config,
                lambda: self._teacher(fold),
            )
            self._trained()
        return self._networks[key]

    def _judge(
        self, trial: FrozenTrial, rows_of: Callable[[nn.Module, TabularDataModule], np.ndarray]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        rows, base_rows, vals, tests = [], [], [], []
        metric, seed = self.ctx.metric, self.ctx.config.search.seed
        source = self.study.trials[_source_number(trial)]
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
                vals.append(evaluate_network(network, data, HELD_OUT)[metric])
                tests.append(evaluate_network(network, data, "test")[metric])
            delta = paired_delta(np.concatenate(rows), np.concatenate(base_rows), metric, seed=seed)
            if rejects_early(delta, self.settings, fold + 1, self.k):
                rejected = True
                break
        assert delta is not None
        certificate = noninferiority(
            np.concatenate(rows),
            np.concatenate(base_rows),
            metric,
            self.settings.max_metric_drop,
            seed=seed,
        )
        passed = not rejected and certificate.passes()
        # The reported interval is the test's own, so that it and the verdict agree.
        delta = PairedDelta(certificate.delta, certificate.low, certificate.high)
        reason = f"rejected after {len(rows)} of {self.k} folds, wholly outside" if rejected else ""
        cv_rows = int(sum(len(r) for r in rows))
        entry = {
            "runs": len(rows),
            "by": "folds",
            "val_delta_mean": delta.delta,
            "passed": passed,
            "cv_delta_ci_low": delta.low,
            "cv_delta_ci_high": delta.high,
            "cv_rows": cv_rows,
            "rejected_early": rejected,
            "reason": reason,
        }
        row = _row(trial, vals or [math.nan], tests or [math.nan], delta.delta, passed, reason)
        row |= {
            "cv_rows": cv_rows,
            "cv_delta_ci_low": delta.low,
            "cv_delta_ci_high": delta.high,
        }
        return entry, row

    def fp32(self, trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._judge(trial, lambda network, data: row_scores(network, data, HELD_OUT))

    def copy(
        self, trial: FrozenTrial, source: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        precision = str(attributes.precision(trial))
        threads = self.ctx.config.measure.threads
        entry, row = self._judge(
            trial, lambda network, data: _quantized_rows(network, data, precision, threads)
        )
        if entry["passed"] and not source["passed"]:
            reason = f"its source, trial {attributes.variant_of(trial)}, does not hold"
            entry, row = (
                entry | {"passed": False, "reason": reason},
                row
                | {
                    "passed": False,
                    "reason": reason,
                },
            )
        return entry, row


def _source_number(trial: FrozenTrial) -> int:
    """The trial whose networks judge `trial`: an INT8 copy's source, else itself."""
    source = attributes.variant_of(trial)
    return trial.number if source is None else source


def _quantized_rows(
    network: nn.Module, data: TabularDataModule, precision: str, threads: int
) -> np.ndarray:
    """The per-row scores of `network`'s `precision` copy on `data`'s validation rows, made as
    the search makes its INT8 copies (`search.front.quantized`)."""
    from search.front.quantized import graph_outputs, quantize
    from search.measure import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(network, Path(tmp) / "fp32.onnx")
        graph = quantize(fp32, Path(tmp) / "int8.onnx", precision, data.tensors["train"])
        return output_row_scores(graph_outputs(graph, data, HELD_OUT, threads), data, HELD_OUT)


def _row(
    trial: FrozenTrial,
    vals: list[float],
    tests: list[float],
    delta: float,
    passed: bool,
    reason: str = "",
) -> dict[str, Any]:
    return {
        "trial": trial.number,
        "approach": attributes.approach(trial),
        "precision": attributes.precision_label(trial),
        "widths": attributes.widths_text(trial),
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
