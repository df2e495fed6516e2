"""The search space as data, and drawing a candidate as a small pure function of (trial, space).

A scratch trial draws a `ScratchShape` (hidden widths plus any training hyperparameters), a prune
trial a `PruningPlan`; both are plain data, checked without running a study and logged as they
are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from lightning_modules.networks import NetworkSpec
from pruning.plan import PruningPlan, layer_priorities_to_order
from search.config import PruneConfig, Range, SpaceConfig
from search.study import attributes
from search.study.settings import is_feasible
from search.study.storage import searched_trials

if TYPE_CHECKING:
    from search.study.context import SearchContext

TRAINING_KNOBS = ("lr", "weight_decay", "dropout")


@dataclass(frozen=True)
class ScratchShape:
    """What a scratch trial trains: widths per prunable group, and training values unlike the
    config's. (`hidden` is an MLP's name for them, kept because studies store it.)"""

    hidden: tuple[int, ...]
    multipliers: tuple[float, ...]
    training: dict[str, float]

    def key(self) -> str:
        """Identifies what would be trained, to recognise a repeat of an earlier trial."""
        knobs = ",".join(f"{k}={v:.6g}" for k, v in sorted(self.training.items()))
        return "-".join(map(str, self.hidden)) + (f"|{knobs}" if knobs else "")


def round_width(width: float, multiple: int) -> int:
    """Round to a multiple of `multiple` (hardware-friendly sizes), never below 1.

    Layers narrower than `multiple` are rounded to the nearest integer instead, so that a small
    layer is not forced up or down to a whole multiple.
    """
    if width >= multiple:
        return max(multiple, int(round(width / multiple)) * multiple)
    return max(1, int(round(width)))


def layer_ranges(space: SpaceConfig, n_layers: int) -> list[Range]:
    return [space.layers[i] if i < len(space.layers) else space.multiplier for i in range(n_layers)]


def _suggest(trial: optuna.Trial, name: str, bounds: Range) -> float:
    return trial.suggest_float(name, bounds.low, bounds.high, step=bounds.step, log=bounds.log)


def draw_multipliers(trial: optuna.Trial, space: SpaceConfig, n_layers: int) -> list[float]:
    """One width multiplier per hidden layer, as the space's scheme draws them.

    `scale_shape`: multiplier_i = scale x shape_i, clipped to the layer's range. Both approaches
    call this with the same parameter names, so a prune trial's keep ratios and a scratch trial's
    multipliers are one thing to the sampler.
    """
    ranges = layer_ranges(space, n_layers)
    if space.scheme == "per_layer":
        # Rounded: a step grid in floats gives 0.15000000000000002, which reads badly in MLflow.
        return [round(_suggest(trial, f"multiplier_{i}", r), 6) for i, r in enumerate(ranges)]
    scale = _suggest(trial, "width_scale", space.scale)
    shapes = [_suggest(trial, f"width_shape_{i}", space.shape) for i in range(n_layers)]
    return [
        round(min(max(scale * shape, r.low), r.high), 6)
        for shape, r in zip(shapes, ranges, strict=True)
    ]


def draw_shape(
    trial: optuna.Trial, space: SpaceConfig, baseline_hidden: tuple[int, ...]
) -> ScratchShape:
    """Draw one scratch candidate: widths per hidden layer, optional removals, training knobs."""
    multipliers = draw_multipliers(trial, space, len(baseline_hidden))
    kept = list(range(len(baseline_hidden)))
    if space.remove_layers and len(baseline_hidden) > 1:
        kept = [
            i
            for i in range(len(baseline_hidden))
            if trial.suggest_categorical(f"keep_layer_{i}", [True, False])
        ]
        # A network needs one hidden layer: if every layer was dropped, the first one stays.
        kept = kept or [0]
    hidden = tuple(
        round_width(baseline_hidden[i] * multipliers[i], space.width_multiple) for i in kept
    )
    training = {
        name: _suggest(trial, name, bounds)
        for name in TRAINING_KNOBS
        if (bounds := getattr(space, name)) is not None
    }
    return ScratchShape(hidden=hidden, multipliers=tuple(multipliers), training=training)


def uniform_params(space: SpaceConfig, n_layers: int, multiplier: float) -> dict[str, Any]:
    """The trial parameters of the shape that multiplies every layer by `multiplier`."""
    if space.scheme == "per_layer":
        params: dict[str, Any] = {f"multiplier_{i}": multiplier for i in range(n_layers)}
    else:
        params = {"width_scale": multiplier} | {f"width_shape_{i}": 1.0 for i in range(n_layers)}
    if space.remove_layers and n_layers > 1:
        params |= {f"keep_layer_{i}": True for i in range(n_layers)}
    return params


def baseline_params(space: SpaceConfig, n_layers: int) -> dict[str, Any]:
    """The trial parameters that reproduce the baseline: every multiplier 1, every layer kept."""
    return uniform_params(space, n_layers, 1.0)


def ladder_params(space: SpaceConfig, n_layers: int, approaches: Sequence[str]) -> list[dict]:
    """The uniform ladder (`space.ladder`), as scratch trials to queue after the baseline.

    A naive sweep that shrinks every layer alike is what a user would try by hand; queuing it
    first means the search never does worse than that sweep, and the sampler starts from it.
    """
    if "scratch" not in approaches:
        return []
    choice = {"approach": "scratch"} if len(approaches) > 1 else {}
    return [choice | uniform_params(space, n_layers, m) for m in space.ladder]


def apply_shape(baseline: NetworkSpec, drawn: ScratchShape) -> NetworkSpec:
    """The baseline spec with the sampled group widths and dropout."""
    spec = baseline.with_group_sizes(drawn.hidden)
    if "dropout" in drawn.training:
        # Every kind's spec is a frozen dataclass with a dropout field.
        spec = dataclasses.replace(spec, dropout=drawn.training["dropout"])  # type: ignore[type-var]
    return spec


def refine_ladder(rungs: Sequence[tuple[float, bool]], space: SpaceConfig) -> list[float]:
    """Two more uniform multipliers where the ladder crossed the floor, smallest first.

    Args:
        rungs: (multiplier, within the floor) of each finished ladder trial.

    Between the smallest rung within the floor and the next rung down, which was not, lie the
    smallest uniform networks that may still be: two geometric steps between them. When even
    the smallest rung was within the floor, the ladder goes on halving (down to `space.scale`'s
    low end). When no rung was, there is nothing small to refine and the sampler takes over.
    """
    within = [m for m, ok in rungs if ok]
    if not within:
        return []
    smallest = min(within)
    below = [m for m, ok in rungs if not ok and m < smallest]
    if below:
        step = max(below) / smallest
        points = [smallest * step ** (2 / 3), smallest * step ** (1 / 3)]
    else:
        points = [smallest / 4, smallest / 2]
    low = space.scale.low
    return sorted({round(max(p, low), 6) for p in points if p < smallest and smallest > low})


def draw_approach(trial: optuna.Trial, approaches: Sequence[str]) -> str:
    """Which approach a trial takes; a parameter only when there is a choice."""
    if len(approaches) == 1:
        return approaches[0]
    return str(trial.suggest_categorical("approach", list(approaches)))


def draw_plan(
    trial: optuna.Trial, space: PruneConfig, n_layers: int, widths: SpaceConfig | None = None
) -> PruningPlan:
    """Draw one pruning plan: keep ratios, layer order, criterion, schedule, fine-tuning.

    With `widths` in the `scale_shape` scheme, the keep ratios are the shared width multipliers
    (clipped to `space.keep_ratio`); otherwise each layer draws its own `keep_ratio_i`.
    """
    ratio = space.keep_ratio
    if widths is not None and widths.scheme == "scale_shape":
        drawn = draw_multipliers(trial, widths, n_layers)
        ratios = tuple(round(min(max(m, ratio.low), ratio.high, 1.0), 6) for m in drawn)
    else:
        ratios = tuple(round(_suggest(trial, f"keep_ratio_{i}", ratio), 6) for i in range(n_layers))
    if space.order is not None:
        order = tuple(int(i) for i in space.order)  # names were resolved with the config
    else:
        # One priority per layer; the layers are pruned highest priority first.
        priorities = [trial.suggest_float(f"prune_priority_{i}", 0.0, 1.0) for i in range(n_layers)]
        order = layer_priorities_to_order(priorities)
    schedule = str(trial.suggest_categorical("prune_schedule", space.schedules))
    return PruningPlan(
        keep_ratios=ratios,
        order=order,
        criterion=str(trial.suggest_categorical("prune_criterion", space.criteria)),
        schedule=schedule,
        fine_tune_epochs=int(trial.suggest_categorical("fine_tune_epochs", space.fine_tune_epochs)),
        step_epochs=space.step_epochs if schedule in ("iterative", "adaptive") else 0,
    )


def refine_after_ladder(study: optuna.Study, ctx: SearchContext) -> None:
    """Once every ladder trial has finished, queue the uniform shapes `refine_ladder` names.

    Runs in the main process after each trial (workers' trials included, through the storage),
    once per study: the study attribute remembers that it happened.
    """
    search = ctx.config.search
    n_layers = len(ctx.baseline.group_sizes())
    ladder = ladder_params(search.space, n_layers, search.approaches)
    if not ladder or attributes.ladder_refined(study):
        return
    wanted = [{k: v for k, v in params.items() if k != "approach"} for params in ladder]
    done: dict[float, bool] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        params = {k: v for k, v in trial.params.items() if k != "approach"}
        if params in wanted:
            # The ladder's uniform multiplier: the scale, or (per layer) the first multiplier.
            scale = params["width_scale"] if "width_scale" in params else params["multiplier_0"]
            done[float(scale)] = is_feasible(trial)
    room = search.n_trials - searched_trials(study)
    if len(done) < len(ladder) or room <= 0:
        return
    attributes.mark_ladder_refined(study)
    rungs = list(done.items())
    choice = {"approach": "scratch"} if len(search.approaches) > 1 else {}
    for multiplier in refine_ladder(rungs, search.space)[:room]:
        study.enqueue_trial(choice | uniform_params(search.space, n_layers, multiplier))
