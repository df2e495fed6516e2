"""One trial: sample widths, train from scratch, measure, and return the three objectives.

Every step is a small function of its own; `run_trial` only strings them together, so that a
prune trial (next approach) can plug in beside `scratch`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import MLP, MLPSpec, build
from lightning_modules.stopping import StopBelowThreshold
from lightning_modules.training import HIGHER_IS_BETTER, PRIMARY_METRIC, FitResult, fit
from pruning.plan import PruningPlan, apply_plan
from search.config import Config
from search.measure import measure
from search.pyfunc_model import load_network, save_network
from search.space import Sample, apply, sample, sample_approach, sample_plan
from search.study import ATTR
from search.train_job import train_config

# A trial stops early when, after the grace period, its best validation metric is this far past
# the floor: the floor's own margin again, plus 2% of the baseline (clearly out of reach).
_HOPELESS_FRACTION = 0.02


@dataclass
class SearchContext:
    """What every trial of a study shares; rebuilt identically in each worker process."""

    config: Config
    data: TabularDataModule
    baseline: MLPSpec
    trials_dir: Path
    # The trained baseline, loaded once per process for prune trials.
    trained_baseline: MLP | None = None

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.data.task]

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]


def floor(study_attrs: dict[str, Any]) -> float | None:
    """The worst acceptable validation metric, or None before the baseline has finished."""
    baseline = study_attrs.get("baseline_metric")
    if baseline is None:
        return None
    drop = study_attrs["max_metric_drop"]
    return baseline - drop if study_attrs["higher_is_better"] else baseline + drop


def floor_violation(value: float, study_attrs: dict[str, Any]) -> float:
    """Optuna's constraint value: <= 0 when `value` is within the floor."""
    limit = floor(study_attrs)
    if limit is None:
        return 0.0
    return limit - value if study_attrs["higher_is_better"] else value - limit


def _stopper(ctx: SearchContext, study_attrs: dict[str, Any]) -> StopBelowThreshold | None:
    limit = floor(study_attrs)
    if limit is None:
        return None
    margin = study_attrs["max_metric_drop"] + _HOPELESS_FRACTION * abs(
        study_attrs["baseline_metric"]
    )
    threshold = limit - margin if ctx.higher_is_better else limit + margin
    max_epochs = ctx.config.training.max_epochs
    return StopBelowThreshold(
        f"val_{ctx.metric}",
        threshold,
        higher_is_better=ctx.higher_is_better,
        grace_epochs=max(5, max_epochs // 2),
    )


def _find_repeat(study: optuna.Study, key: str, number: int) -> optuna.trial.FrozenTrial | None:
    """A finished trial that trained exactly this sample; training it again would waste time."""
    for done in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if done.number != number and done.user_attrs.get("sample_key") == key:
            return done
    return None


def train_scratch(ctx: SearchContext, spec: MLPSpec, drawn: Sample, extra: list[Any]) -> FitResult:
    """Approach 1 of Klemetti et al.: the smaller shape, trained from scratch."""
    config = train_config(ctx.config)
    config = dataclasses.replace(
        config,
        lr=drawn.training.get("lr", config.lr),
        weight_decay=drawn.training.get("weight_decay", config.weight_decay),
    )
    return fit(build(spec, seed=config.seed), ctx.data, config, extra_callbacks=extra)


def load_baseline(ctx: SearchContext, study_attrs: dict[str, Any]) -> MLP:
    """The study's trained baseline: trained once (trial 0), read from disk by every worker."""
    if ctx.trained_baseline is None:
        number = study_attrs.get("baseline_trial")
        if number is None:
            raise RuntimeError("a prune trial needs the baseline, which has not finished yet")
        _, network, _ = load_network(ctx.trials_dir / f"trial-{number}")
        assert isinstance(network, MLP)
        ctx.trained_baseline = network
    return ctx.trained_baseline


def prune_baseline(ctx: SearchContext, plan: PruningPlan, study_attrs: dict[str, Any]) -> FitResult:
    """Approach 2 of Klemetti et al.: prune the trained baseline structurally, then fine-tune."""
    started = time.perf_counter()
    config = train_config(ctx.config)
    network, val_metrics = apply_plan(
        load_baseline(ctx, study_attrs), plan, data=ctx.data, train_config=config, seed=config.seed
    )
    return FitResult(
        network=network,
        val_metrics=val_metrics,
        test_metrics=evaluate_network(network, ctx.data, "test"),
        epochs=plan.fine_tune_epochs,
        best_epoch=-1,
        seconds=time.perf_counter() - started,
    )


def measure_network(ctx: SearchContext, result: FitResult) -> dict[str, float]:
    """Validation and test metrics, size and latency, as one flat dict of floats."""
    search, wanted = ctx.config.search, ctx.config.measure
    batch_sizes = tuple(sorted({*wanted.batch_sizes, search.latency.batch_size}))
    runtimes = tuple(dict.fromkeys([*wanted.runtimes, search.latency.runtime]))
    measured = measure(
        result.network, batch_sizes=batch_sizes, runtimes=runtimes, threads=wanted.threads
    )
    metrics = {f"val_{k}": v for k, v in result.val_metrics.items()}
    metrics |= {f"test_{k}": v for k, v in result.test_metrics.items()}
    metrics |= measured.to_metrics()
    metrics |= {"train_seconds": result.seconds, "epochs": float(result.epochs)}
    return metrics


def run_trial(trial: optuna.Trial, ctx: SearchContext) -> tuple[float, float, float]:
    """The objective: (validation metric, size, latency) of one sampled network."""
    attrs = dict(trial.study.user_attrs[ATTR])
    is_baseline = bool(trial.user_attrs.get("baseline", False))
    approach = "scratch" if is_baseline else sample_approach(trial, ctx.config.search.approaches)
    drawn: Sample | None = None
    plan: PruningPlan | None = None
    if approach == "scratch":
        drawn = sample(trial, ctx.config.search.space, ctx.baseline.hidden)
        key = drawn.key()
        trial.set_user_attr("hidden", list(drawn.hidden))
    else:
        plan = sample_plan(trial, ctx.config.search.prune, len(ctx.baseline.hidden))
        key = plan.key()
        trial.set_user_attr("plan", plan.to_dict())
    trial.set_user_attr("approach", approach)
    trial.set_user_attr("sample_key", key)
    repeat = _find_repeat(trial.study, key, trial.number)
    if repeat is not None and repeat.values is not None:
        for name in ("repeat_of", "metrics", "spec", "hidden"):
            value = repeat.number if name == "repeat_of" else repeat.user_attrs[name]
            trial.set_user_attr(name, value)
        trial.set_constraint("metric_floor", floor_violation(repeat.values[0], attrs))
        return (repeat.values[0], repeat.values[1], repeat.values[2])

    stopper = None
    if drawn is not None:
        spec = apply(ctx.baseline, drawn)
        stopper = None if is_baseline else _stopper(ctx, attrs)
        result = train_scratch(ctx, spec, drawn, [stopper] if stopper else [])
    else:
        assert plan is not None
        result = prune_baseline(ctx, plan, attrs)
        assert isinstance(result.network, MLP)
        spec = result.network.spec
        trial.set_user_attr("hidden", list(spec.hidden))
    metrics = measure_network(ctx, result)
    value = metrics[f"val_{ctx.metric}"]
    values = (value, metrics[attrs["size"]], metrics[attrs["latency"]])
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"trial {trial.number} produced non-finite objectives {values}")

    save_network(
        ctx.trials_dir / f"trial-{trial.number}", spec, result.network, ctx.data.preprocessor
    )
    trial.set_user_attr("spec", spec.to_dict())
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("stopped_below_floor", bool(stopper and stopper.stopped_epoch is not None))
    if is_baseline:
        attrs |= {"baseline_trial": trial.number, "baseline_metric": value}
        trial.study.set_user_attr(ATTR, attrs)
    trial.set_constraint("metric_floor", floor_violation(value, attrs))
    return values
