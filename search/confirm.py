"""The confirmation step (`search.confirm: K`): front members trained again under K more seeds.

One training run is one draw: a small network's validation metric moves with its seed by about
as much as the floor allows. Before the champion is picked, every front member is trained again
from the same candidate (its widths from scratch, or its pruning plan on the same baseline)
under K other seeds; the table reports the spread, and a candidate passes when its mean
validation delta over all runs lies within the floor. `pareto.champion` then picks among the
candidates that passed.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import optuna
import pandas as pd
from torch import nn

from lightning_modules.evaluation import evaluate_network
from lightning_modules.family import TabularNetwork
from lightning_modules.networks import build, spec_from_dict
from lightning_modules.training import fit
from pruning.plan import PruningPlan, apply_plan
from search import pareto
from search.adapters import fit_settings
from search.objective import SearchContext, load_baseline
from search.study_settings import StudySettings

# Study attributes: each retrained run by "trial:seed" (so a resumed study trains none twice),
# and the summary per trial that `pareto.champion` reads.
RUNS_ATTR = "tabslim_confirm_runs"
SUMMARY_ATTR = pareto.CONFIRMATION_ATTR

COLUMNS = [
    "trial", "approach", "widths", "runs", "val_mean", "val_std", "val_min", "val_max",
    "val_delta_mean", "test_mean", "test_std", "passed",
]  # fmt: skip


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


def _fp32_members(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The front's trials, a quantized variant's source in its place (it is the one trained)."""
    members: dict[int, optuna.trial.FrozenTrial] = {}
    for trial in pareto.front(study):
        source = trial.user_attrs.get("variant_of")
        chosen = trial if source is None else study.trials[int(source)]
        members.setdefault(chosen.number, chosen)
    return sorted(members.values(), key=lambda t: t.number)


def confirm_front(study: optuna.Study, ctx: SearchContext, k: int) -> pd.DataFrame:
    """Train every front member under `k` more seeds; store and return the spread per member."""
    settings = StudySettings.read(study)
    runs: dict[str, dict[str, float]] = dict(study.user_attrs.get(RUNS_ATTR, {}))
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    first_seed = ctx.config.training.seed + 1
    for trial in _fp32_members(study):
        if trial.user_attrs.get("baseline") or settings.baseline_metric is None:
            continue
        metrics = trial.user_attrs["metrics"]
        vals, tests = [metrics[f"val_{ctx.metric}"]], [metrics[f"test_{ctx.metric}"]]
        for seed in range(first_seed, first_seed + k):
            key = f"{trial.number}:{seed}"
            if key not in runs:
                runs[key] = _retrain(trial, study, ctx, seed)
                study.set_user_attr(RUNS_ATTR, runs)
            vals.append(runs[key]["val"])
            tests.append(runs[key]["test"])
        delta = statistics.fmean(vals) - settings.baseline_metric
        passed = settings.violation(settings.baseline_metric + delta) <= 0
        summary[str(trial.number)] = {"runs": len(vals), "val_delta_mean": delta, "passed": passed}
        rows.append(
            {
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
        )
    study.set_user_attr(SUMMARY_ATTR, summary)
    return pd.DataFrame(rows, columns=COLUMNS)
