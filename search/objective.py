"""One trial: sample widths, train from scratch, measure, and return the three objectives.

Every step is a small function of its own; `run_trial` only strings them together, so that a
prune trial (next approach) can plug in beside `scratch`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import MLPSpec, build
from lightning_modules.stopping import StopBelowThreshold
from lightning_modules.training import HIGHER_IS_BETTER, PRIMARY_METRIC, FitResult, fit
from search.config import Config
from search.measure import measure
from search.pyfunc_model import save_network
from search.space import Sample, apply, sample
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
    drawn = sample(trial, ctx.config.search.space, ctx.baseline.hidden)
    spec = apply(ctx.baseline, drawn)
    trial.set_user_attr("approach", "scratch")
    trial.set_user_attr("hidden", list(spec.hidden))
    trial.set_user_attr("sample_key", drawn.key())
    repeat = _find_repeat(trial.study, drawn.key(), trial.number)
    if repeat is not None and repeat.values is not None:
        trial.set_user_attr("repeat_of", repeat.number)
        trial.set_user_attr("metrics", repeat.user_attrs["metrics"])
        trial.set_user_attr("spec", repeat.user_attrs["spec"])
        trial.set_constraint("metric_floor", floor_violation(repeat.values[0], attrs))
        return (repeat.values[0], repeat.values[1], repeat.values[2])

    is_baseline = bool(trial.user_attrs.get("baseline", False))
    stopper = None if is_baseline else _stopper(ctx, attrs)
    result = train_scratch(ctx, spec, drawn, [stopper] if stopper else [])
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
