"""One trial: draw a candidate, train it (from scratch, or prune the baseline and fine-tune),
measure it, and return the three objectives.

Each step is a small function; `run_trial` only strings them together.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from lightning_modules.callbacks import StopAtRungs, StopBelowThreshold
from lightning_modules.distillation import Distillation, teacher_outputs
from lightning_modules.evaluation import evaluate_network, row_scores
from lightning_modules.networks import NetworkSpec, TabularNetwork, build
from lightning_modules.training import FitSettings, fit
from pruning.plan import PruningPlan, apply_plan
from search.cluster import publish
from search.config import Config
from search.inputs import fit_settings, run_metrics
from search.measure import (
    WHERE_RAN,
    Phases,
    Timing,
    cuda_latency_ms,
    host_profile,
    measure,
    paired_delta,
)
from search.serving import save_network
from search.study.baseline import TEACHER_FILE, load_baseline, load_teacher
from search.study.context import SearchContext
from search.study.fidelity import STOP_ATTR, RungJudge, rung_epochs
from search.study.settings import POWER_ATTR, StudySettings, latency_metric
from search.study.space import ScratchShape, apply_shape, draw_approach, draw_plan, draw_shape

# A trial stops early when, after the grace period, its best validation metric is this far past
# the floor: the floor's own margin again, plus 2% of the baseline (clearly out of reach).
_HOPELESS_FRACTION = 0.02


@dataclass(frozen=True)
class Candidate:
    """What a trial will train: a scratch shape or a pruning plan, and its repeat key."""

    approach: str
    shape: ScratchShape | None = None
    plan: PruningPlan | None = None

    @property
    def key(self) -> str:
        """Identifies what would be trained, to recognise a repeat of an earlier trial."""
        drawn = self.shape if self.shape is not None else self.plan
        assert drawn is not None
        # A distilled shape is another network than the same shape from scratch.
        return drawn.key() + ("|distill" if self.approach == "distill" else "")


@dataclass
class Trained:
    """A candidate after training: the network, its spec and metrics, and the epochs run.

    `epochs` counts training epochs for both approaches: from scratch until early stopping, or
    every fine-tuning epoch of a pruning plan.
    """

    network: nn.Module
    spec: NetworkSpec
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    epochs: int
    seconds: float
    stopped_below_floor: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # How training ended (`lightning_modules.training.STOPPED_BY`, or "plan" for the planned
    # fine-tuning epochs of a pruned network).
    stopped_by: str = "plan"


# Distill candidates draw the same widths as scratch ones: a shape, trained another way.
SHAPED = ("scratch", "distill")


def draw_candidate(trial: optuna.Trial, ctx: SearchContext) -> Candidate:
    """The baseline's own shape for the baseline trial; otherwise an approach and its draw."""
    search = ctx.config.search
    is_baseline = bool(trial.user_attrs.get("baseline", False))
    approach = "scratch" if is_baseline else draw_approach(trial, search.approaches)
    if approach in SHAPED:
        shape = draw_shape(trial, search.space, ctx.baseline.group_sizes())
        return Candidate(approach, shape=shape)
    plan = draw_plan(trial, search.prune, len(ctx.baseline.group_sizes()), search.space)
    return Candidate(approach, plan=plan)


def _find_repeat(study: optuna.Study, key: str, number: int) -> optuna.trial.FrozenTrial | None:
    """A finished trial that trained exactly this candidate; training it again would waste time."""
    for done in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if done.number != number and done.user_attrs.get("candidate_key") == key:
            return done
    return None


def _stopper(ctx: SearchContext, settings: StudySettings) -> StopBelowThreshold | None:
    limit = settings.floor()
    if limit is None or settings.baseline_metric is None:
        return None
    margin = settings.allowed_drop() + _HOPELESS_FRACTION * abs(settings.baseline_metric)
    threshold = limit - margin if ctx.higher_is_better else limit + margin
    max_epochs = ctx.config.training.max_epochs
    return StopBelowThreshold(
        f"val_{ctx.metric}",
        threshold,
        higher_is_better=ctx.higher_is_better,
        # Three quarters of the epochs: small networks learn more slowly, and cutting them off
        # at half their epochs kept the search away from exactly the sizes it looks for.
        grace_epochs=max(5, (3 * max_epochs) // 4),
    )


def scratch_settings(
    config: Config, params: Mapping[str, Any], baseline: bool = False, distill: bool = False
) -> FitSettings:
    """How a scratch candidate trains: the training section, with its own searched learning
    rate and weight decay, and room to train on while it still improves (`max_epochs_factor`).

    The epoch cap fits the baseline; a small network is often still improving there, and
    cutting it off would judge an unfinished network. The baseline keeps the cap as it is.
    """
    settings = fit_settings(config)
    if distill:
        given = config.search.distill
        settings = dataclasses.replace(
            settings,
            max_epochs=given.max_epochs or settings.max_epochs,
            distill=Distillation(given.weight, given.temperature),
        )
    limit = None if baseline else round(settings.max_epochs * config.search.max_epochs_factor)
    return dataclasses.replace(
        settings,
        lr=params.get("lr", settings.lr),
        weight_decay=params.get("weight_decay", settings.weight_decay),
        epoch_limit=limit,
    )


def train_scratch(
    ctx: SearchContext,
    shape: ScratchShape,
    stopper: StopBelowThreshold | None,
    baseline: bool = False,
    *,
    teacher: torch.Tensor | None = None,
    callbacks: list[Callback] | None = None,
) -> Trained:
    """Approach 1 of Klemetti et al.: the smaller shape, trained from scratch; with `teacher`
    (the baseline's outputs on the training rows), distilled from it instead."""
    spec = apply_shape(ctx.baseline, shape)
    settings = scratch_settings(ctx.config, shape.training, baseline, distill=teacher is not None)
    result = fit(
        build(spec, seed=settings.seed),
        ctx.data,
        settings,
        extra_callbacks=([stopper] if stopper else []) + (callbacks or []),
        teacher=teacher,
    )
    assert isinstance(result.network, TabularNetwork)
    return Trained(
        network=result.network,
        spec=spec,
        val_metrics=result.val_metrics,
        test_metrics=result.test_metrics,
        epochs=result.epochs,
        seconds=result.seconds,
        stopped_below_floor=bool(stopper and stopper.stopped_epoch is not None),
        stopped_by=result.stopped_by,
    )


def prune_baseline(
    ctx: SearchContext,
    plan: PruningPlan,
    settings: StudySettings,
    study: optuna.Study,
    callbacks: list[Callback] | None = None,
) -> Trained:
    """Approach 2 of Klemetti et al.: prune the trained baseline structurally, then fine-tune."""
    started = time.perf_counter()
    fit_with = fit_settings(ctx.config)
    result = apply_plan(
        load_baseline(ctx, settings, study),
        plan,
        data=ctx.data,
        fit_settings=fit_with,
        seed=fit_with.seed,
        callbacks=callbacks,
    )
    return Trained(
        network=result.network,
        spec=result.network.spec,
        val_metrics=result.val_metrics,
        test_metrics=evaluate_network(result.network, ctx.data, "test"),
        epochs=result.epochs,
        seconds=time.perf_counter() - started,
        details=result.details,
    )


def _rungs(
    trial: optuna.Trial, ctx: SearchContext, settings: StudySettings, candidate: Candidate
) -> StopAtRungs | None:
    """The rung callback of a multi-fidelity search (`search.fidelity`), or None without one.

    From scratch the rungs count training epochs up to `training.max_epochs`; a prune trial's
    count its last fine-tuning epochs.
    """
    fidelity = ctx.config.search.fidelity
    if fidelity is None:
        return None
    if candidate.plan is not None:
        if candidate.plan.schedule == "adaptive":
            return None  # its accept/rollback loop fine-tunes in many short fits
        epochs = candidate.plan.fine_tune_epochs
    else:
        epochs = ctx.config.training.max_epochs
    rungs = rung_epochs(fidelity.min_epochs, fidelity.reduction, epochs)
    if not rungs:
        return None
    judge = RungJudge(
        trial,
        approach=candidate.approach,
        floor=settings.floor(),
        higher_is_better=ctx.higher_is_better,
        rungs=rungs,
        reduction=fidelity.reduction,
        margin=_clip_margin(trial.study, settings),
    )
    return StopAtRungs(f"val_{ctx.metric}", rungs, judge, higher_is_better=ctx.higher_is_better)


def _clip_margin(study: optuna.Study, settings: StudySettings) -> float:
    """How far past the floor a rung value still counts, in the metric's units: the
    half-width the certification rows are expected to give (0 before it is known)."""
    statement = study.user_attrs.get(POWER_ATTR) or {}
    half = float(statement.get("half_width") or 0.0)
    if not math.isfinite(half):
        return 0.0
    if settings.higher_is_better or settings.baseline_metric is None:
        return half
    return half * abs(settings.baseline_metric)  # relative for an error, as the floor is


def measure_network(ctx: SearchContext, trained: Trained) -> dict[str, float]:
    """Validation and test metrics, size and the latency objective, as one flat dict of floats."""
    latency = ctx.config.search.latency
    measured = measure(
        trained.network,
        batch_sizes=(latency.batch_size,),
        runtimes=(latency.runtime,),
        threads=ctx.config.measure.threads,
        timing=Timing(max_seconds=latency.seconds),
        served=ctx.served_rows(),
    )
    metrics = run_metrics(
        trained.val_metrics,
        trained.test_metrics,
        measured,
        train_seconds=trained.seconds,
        epochs=trained.epochs,
    )
    # Comparable across nodes: the same latency over a reference network timed on this host.
    host = host_profile(latency.runtime, latency.batch_size, ctx.config.measure.threads)
    metrics["reference_latency_ms"] = host.reference_ms
    metrics["latency_relative"] = metrics[latency_metric(ctx.config)] / host.reference_ms
    cuda = cuda_latency_ms(trained.network, latency.batch_size)
    if cuda is not None:
        metrics[f"latency_cuda_b{latency.batch_size}_median_ms"] = cuda
    return metrics


ROWS_FILE = "row_scores.npz"
# Splits paired with the baseline as the trial ends (MLflow's val_delta and test_delta).
SPLITS = ("val", "test")
# The certification rows' scores are kept beside them, unread until every candidate is in
# (`search.front.certify`): no decision during the search may see them.
CERTIFY = "certify"


def scored_splits(ctx: SearchContext) -> tuple[str, ...]:
    """The splits whose per-row scores a trial keeps: `SPLITS`, and the certification rows
    where the data has them."""
    return (*SPLITS, CERTIFY) if ctx.data.has_certification else SPLITS


def paired_metrics(
    ctx: SearchContext, settings: StudySettings, rows: dict[str, np.ndarray], study: optuna.Study
) -> dict[str, float]:
    """Candidate minus baseline on the same validation and test rows, with 95% intervals."""
    if ctx.baseline_rows is None:
        if settings.baseline_trial is None:
            return {}
        path = ctx.network_dir(study, settings.baseline_trial) / ROWS_FILE
        with np.load(path) as stored:
            ctx.baseline_rows = {split: stored[split] for split in SPLITS}
    metrics: dict[str, float] = {}
    for split in SPLITS:
        delta = paired_delta(
            rows[split], ctx.baseline_rows[split], ctx.metric, seed=ctx.config.search.seed
        )
        metrics |= delta.to_metrics(split)
    return metrics


def _record(
    trial: optuna.Trial, settings: StudySettings, values: tuple[float, float, float], **attrs: Any
) -> tuple[float, float, float]:
    """Store the trial's outcome (user attributes and the floor constraint); return its values."""
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    trial.set_constraint("metric_floor", settings.violation(values[0]))
    return values


def run_trial(trial: optuna.Trial, ctx: SearchContext) -> tuple[float, float, float]:
    """The objective: (validation metric, size, latency) of one drawn candidate."""
    settings = StudySettings.read(trial.study)
    is_baseline = bool(trial.user_attrs.get("baseline", False))
    candidate = draw_candidate(trial, ctx)
    trial.set_user_attr("approach", candidate.approach)
    trial.set_user_attr("candidate_key", candidate.key)
    if candidate.plan is not None:
        trial.set_user_attr("plan", candidate.plan.to_dict())
    repeat = _find_repeat(trial.study, candidate.key, trial.number)
    if repeat is not None and repeat.values is not None:
        # Its metrics were measured where the first one ran: that host goes with them.
        names = ("metrics", "spec", "hidden", *WHERE_RAN)
        copied = {name: repeat.user_attrs[name] for name in names if name in repeat.user_attrs}
        values = (repeat.values[0], repeat.values[1], repeat.values[2])
        return _record(trial, settings, values, repeat_of=repeat.number, **copied)

    # Where the trial's time went, as `seconds.<phase>` metrics: at a million rows the
    # per-row work beside training (row scores, paired intervals) must stay small.
    phases = Phases()
    rungs = None if is_baseline else _rungs(trial, ctx, settings, candidate)
    callbacks: list[Callback] = [rungs] if rungs is not None else []
    with phases("train"):
        if candidate.shape is not None:
            stopper = None if is_baseline else _stopper(ctx, settings)
            distill = candidate.approach == "distill"
            teacher = load_teacher(ctx, settings, trial.study) if distill else None
            trained = train_scratch(
                ctx,
                candidate.shape,
                stopper,
                baseline=is_baseline,
                teacher=teacher,
                callbacks=callbacks,
            )
        else:
            assert candidate.plan is not None
            trained = prune_baseline(ctx, candidate.plan, settings, trial.study, callbacks)
            if rungs is not None and rungs.stopped_epoch is not None:
                # The plan counted every final fine-tuning epoch; the rung cut them short.
                trained.epochs -= candidate.plan.fine_tune_epochs - rungs.stopped_epoch
    with phases("measure"):
        metrics = measure_network(ctx, trained)
    if trained.stopped_by != "plan":
        # Whether training ended on early stopping: one cut off while improving is unfinished.
        metrics["converged"] = float(trained.stopped_by == "early_stopping")
    with phases("row_scores"):
        rows = {split: row_scores(trained.network, ctx.data, split) for split in scored_splits(ctx)}
    directory = ctx.trials_dir / f"trial-{trial.number}"
    if is_baseline:
        ctx.baseline_rows = rows
    with phases("paired"):
        metrics |= paired_metrics(ctx, settings, rows, trial.study)
    value = metrics[f"val_{ctx.metric}"]
    values = (value, metrics[settings.size], metrics[settings.latency])
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"trial {trial.number} produced non-finite objectives {values}")
    with phases("save"):
        save_network(directory, trained.spec, trained.network, ctx.data.preprocessor)
        np.savez(directory / ROWS_FILE, **rows)  # type: ignore[arg-type]
        if is_baseline and "distill" in ctx.config.search.approaches:
            ctx.teacher = teacher_outputs(trained.network, ctx.data)
            np.save(directory / TEACHER_FILE, ctx.teacher.numpy())
        publish(trial, directory, ctx.remote)
    metrics |= phases.metrics()
    if rungs is not None and isinstance(rungs.decide, RungJudge) and rungs.decide.stop:
        # Kept with its metrics, and marked: the champion and the front leave it out.
        trial.set_user_attr(STOP_ATTR, rungs.decide.stop)
    if is_baseline:
        settings = settings.with_baseline(trial.number, value)
        settings.write(trial.study)
    return _record(
        trial,
        settings,
        values,
        hidden=list(trained.spec.group_sizes()),
        spec=trained.spec.to_dict(),
        metrics=metrics,
        stopped_below_floor=trained.stopped_below_floor,
        stopped_by=trained.stopped_by,
        **host_profile(
            ctx.config.search.latency.runtime,
            ctx.config.search.latency.batch_size,
            ctx.config.measure.threads,
        ).attrs(),
        **({"prune_details": trained.details} if trained.details else {}),
    )
