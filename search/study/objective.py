"""One trial: draw a candidate, train it (from scratch, or prune the baseline and fine-tune),
measure it, and return the three objectives.

Each step is a small function; `run_trial` only strings them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
from pytorch_lightning.callbacks import Callback

from lightning_modules.callbacks import StopAtRungs, StopBelowThreshold
from lightning_modules.distillation import teacher_outputs
from lightning_modules.evaluation import row_scores
from pruning.plan import PruningPlan
from search.cluster import publish
from search.inputs import run_metrics
from search.measure import (
    Phases,
    Timing,
    cuda_latency_ms,
    host_profile,
    measure,
    paired_delta,
)
from search.serving import save_network
from search.study import attributes
from search.study.baseline import TEACHER_FILE, load_teacher
from search.study.context import SearchContext
from search.study.fidelity import RungJudge, rung_epochs
from search.study.settings import StudySettings, latency_metric
from search.study.space import ScratchShape, draw_approach, draw_plan, draw_shape
from search.study.trainers import Trained, prune_baseline, train_scratch

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


# Distill candidates draw the same widths as scratch ones: a shape, trained another way.
SHAPED = ("scratch", "distill")


def draw_candidate(trial: optuna.Trial, ctx: SearchContext) -> Candidate:
    """The baseline's own shape for the baseline trial; otherwise an approach and its draw."""
    search = ctx.config.search
    is_baseline = attributes.is_baseline(trial)
    approach = "scratch" if is_baseline else draw_approach(trial, search.approaches)
    if approach in SHAPED:
        shape = draw_shape(trial, search.space, ctx.baseline.group_sizes())
        return Candidate(approach, shape=shape)
    plan = draw_plan(trial, search.prune, len(ctx.baseline.group_sizes()), search.space)
    return Candidate(approach, plan=plan)


def _find_repeat(study: optuna.Study, key: str, number: int) -> optuna.trial.FrozenTrial | None:
    """A finished trial that trained exactly this candidate; training it again would waste time."""
    for done in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if done.number != number and attributes.candidate_key(done) == key:
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
    statement = attributes.power_dict(study) or {}
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


def _constrain(
    trial: optuna.Trial, settings: StudySettings, values: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Set the floor constraint on the trial's validation metric; return its values."""
    trial.set_constraint("metric_floor", settings.violation(values[0]))
    return values


def run_trial(trial: optuna.Trial, ctx: SearchContext) -> tuple[float, float, float]:
    """The objective: (validation metric, size, latency) of one drawn candidate."""
    settings = StudySettings.read(trial.study)
    is_baseline = attributes.is_baseline(trial)
    candidate = draw_candidate(trial, ctx)
    plan = candidate.plan.to_dict() if candidate.plan is not None else None
    attributes.write_candidate(trial, candidate.approach, candidate.key, plan)
    repeat = _find_repeat(trial.study, candidate.key, trial.number)
    if repeat is not None and repeat.values is not None:
        attributes.write_outcome(trial, repeat=repeat)
        return _constrain(trial, settings, (repeat.values[0], repeat.values[1], repeat.values[2]))

    # Where the trial's time went, as `seconds.<phase>` metrics: at a million rows the
    # per-row work beside training (row scores, paired intervals) must stay small.
    phases = Phases()
    rungs = None if is_baseline else _rungs(trial, ctx, settings, candidate)
    with phases("train"):
        trained = _train(trial, ctx, settings, candidate, rungs, is_baseline)
    with phases("measure"):
        metrics = measure_network(ctx, trained)
    if trained.stopped_by != "plan":
        # Whether training ended on early stopping: one cut off while improving is unfinished.
        metrics["converged"] = float(trained.stopped_by == "early_stopping")
    with phases("row_scores"):
        rows = {split: row_scores(trained.network, ctx.data, split) for split in scored_splits(ctx)}
    if is_baseline:
        ctx.baseline_rows = rows
    with phases("paired"):
        metrics |= paired_metrics(ctx, settings, rows, trial.study)
    value = metrics[f"val_{ctx.metric}"]
    values = (value, metrics[settings.size], metrics[settings.latency])
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"trial {trial.number} produced non-finite objectives {values}")
    with phases("save"):
        _save(trial, ctx, trained, rows, is_baseline)
    metrics |= phases.metrics()
    if rungs is not None and isinstance(rungs.decide, RungJudge) and rungs.decide.stop:
        # Kept with its metrics, and marked: the champion and the front leave it out.
        attributes.write_rung_stop(trial, rungs.decide.stop)
    if is_baseline:
        settings = settings.with_baseline(trial.number, value)
        settings.write(trial.study)
    latency = ctx.config.search.latency
    attributes.write_outcome(
        trial,
        hidden=trained.spec.group_sizes(),
        spec=trained.spec.to_dict(),
        metrics=metrics,
        stopped_below_floor=trained.stopped_below_floor,
        stopped_by=trained.stopped_by,
        host=host_profile(latency.runtime, latency.batch_size, ctx.config.measure.threads),
        details=trained.details,
    )
    return _constrain(trial, settings, values)


def _train(
    trial: optuna.Trial,
    ctx: SearchContext,
    settings: StudySettings,
    candidate: Candidate,
    rungs: StopAtRungs | None,
    is_baseline: bool,
) -> Trained:
    """Train the candidate: its shape from scratch (or distilled), or its plan on the baseline."""
    callbacks: list[Callback] = [rungs] if rungs is not None else []
    if candidate.shape is not None:
        stopper = None if is_baseline else _stopper(ctx, settings)
        distill = candidate.approach == "distill"
        teacher = load_teacher(ctx, settings, trial.study) if distill else None
        return train_scratch(
            ctx,
            candidate.shape,
            stopper,
            baseline=is_baseline,
            teacher=teacher,
            callbacks=callbacks,
        )
    assert candidate.plan is not None
    trained = prune_baseline(ctx, candidate.plan, settings, trial.study, callbacks)
    if rungs is not None and rungs.stopped_epoch is not None:
        # The plan counted every final fine-tuning epoch; the rung cut them short.
        trained.epochs -= candidate.plan.fine_tune_epochs - rungs.stopped_epoch
    return trained


def _save(
    trial: optuna.Trial,
    ctx: SearchContext,
    trained: Trained,
    rows: dict[str, np.ndarray],
    is_baseline: bool,
) -> None:
    """Save the network and its row scores (and the baseline's teacher outputs), and publish
    them to every node."""
    directory = ctx.trials_dir / f"trial-{trial.number}"
    save_network(directory, trained.spec, trained.network, ctx.data.preprocessor)
    np.savez(directory / ROWS_FILE, **rows)  # type: ignore[arg-type]
    if is_baseline and "distill" in ctx.config.search.approaches:
        ctx.teacher = teacher_outputs(trained.network, ctx.data)
        np.save(directory / TEACHER_FILE, ctx.teacher.numpy())
    publish(trial, directory, ctx.remote)
