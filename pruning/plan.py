"""Pruning plans: which share of each layer to keep, in which layer order, by which criterion,
one-shot or iterative, and how much fine-tuning at the end.

A plan is plain data, so a search can sample it and MLflow can log it; `apply_plan` turns a
trained network and a plan into a new, smaller trained network and never touches its input.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytorch_lightning.callbacks import Callback

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.training import FitSettings
from pruning.batch_norm import recalibrate_batch_norm
from pruning.choices import SCHEDULES, kept_count
from pruning.criteria import calibration_batch, check_criterion, layer_scores
from pruning.fine_tune import fine_tune
from pruning.removal import keep_top, remove_units


@dataclass(frozen=True)
class PruningPlan:
    """How to prune one network.

    Args:
        keep_ratios: per hidden layer, the share of its neurons that stays, in (0, 1].
        order: the hidden layers in the order they are pruned (a permutation of their indices).
        schedule: "one_shot" prunes layer after layer with no training in between; "iterative"
            fine-tunes `step_epochs` after each layer, so later scores see the recovered network;
            "adaptive" runs the accept/rollback loop (`pruning.reductive`) on the validation
            split, fine-tuning `step_epochs` per step, which chooses every layer's keep ratio
            itself: the keep ratios only set how much its first step removes, and the order
            does not apply.
        fine_tune_epochs: epochs of fine-tuning after the last layer.
    """

    keep_ratios: tuple[float, ...]
    order: tuple[int, ...]
    criterion: str
    schedule: str = "one_shot"
    fine_tune_epochs: int = 1
    step_epochs: int = 1

    def __post_init__(self) -> None:
        check_criterion(self.criterion)
        n = len(self.keep_ratios)
        if sorted(self.order) != list(range(n)):
            raise TabslimInputError(
                f"pruning order must name each of the {n} hidden layers (0..{n - 1}) once, "
                f"but got order={list(self.order)}"
            )
        bad = [r for r in self.keep_ratios if not 0.0 < r <= 1.0]
        if bad:
            raise TabslimInputError(f"keep ratios must be in (0, 1], but got {bad[0]}")
        if self.schedule not in SCHEDULES:
            raise TabslimInputError(
                f"pruning schedule must be one of {list(SCHEDULES)}, but got {self.schedule!r}"
            )
        if self.fine_tune_epochs < 0 or self.step_epochs < 0:
            raise TabslimInputError("fine-tuning epochs must be 0 or more")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: lists, not tuples, so that stored and in-memory plans compare equal."""
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningPlan:
        """The plan `to_dict` wrote (lists back to tuples)."""
        return cls(
            keep_ratios=tuple(float(r) for r in data["keep_ratios"]),
            order=tuple(int(i) for i in data["order"]),
            criterion=str(data["criterion"]),
            schedule=str(data.get("schedule", "one_shot")),
            fine_tune_epochs=int(data.get("fine_tune_epochs", 1)),
            step_epochs=int(data.get("step_epochs", 1)),
        )

    def key(self) -> str:
        """Identifies what would be trained, to recognise a repeat of an earlier trial."""
        ratios = ",".join(f"{r:.4g}" for r in self.keep_ratios)
        order = ",".join(map(str, self.order))
        return (
            f"prune|{self.criterion}|{self.schedule}|r={ratios}|o={order}"
            f"|ft={self.fine_tune_epochs}|step={self.step_epochs}"
        )


def check_plan_fits(
    plan: PruningPlan, widths: Sequence[int], names: Sequence[str] | None = None
) -> None:
    """The plan matches the network: one ratio per prunable group and no group left empty."""
    if len(plan.keep_ratios) != len(widths):
        raise TabslimInputError(
            f"a pruning plan has {len(plan.keep_ratios)} keep ratios for {len(widths)} groups"
            + (f" ({list(names)})" if names else "")
        )
    for layer, (ratio, width) in enumerate(zip(plan.keep_ratios, widths, strict=True)):
        if kept_count(ratio, width) < 1:
            where = f"group {names[layer]}" if names else f"hidden layer {layer}"
            raise TabslimInputError(f"keep ratio {ratio} would leave {where} (width {width}) empty")


@dataclass
class PlanResult:
    """The pruned, fine-tuned network, its validation metrics, and the epochs it was trained.

    `epochs` counts every fine-tuning epoch run: the steps between layers and the final ones.
    `details` holds what a schedule chose by itself, for the trial's record.
    """

    network: Any
    val_metrics: dict[str, float]
    epochs: int
    details: dict[str, Any] = field(default_factory=dict)


def apply_plan(
    network: Any,
    plan: PruningPlan,
    *,
    data: TabularDataModule,
    fit_settings: FitSettings,
    seed: int = 0,
    callbacks: list[Callback] | None = None,
) -> PlanResult:
    """Prune a copy of `network` by `plan` and fine-tune it; never touches `network`.

    `callbacks` join the last fine-tuning fit (not the adaptive schedule's many short ones).
    """
    check_plan_fits(plan, network.spec.group_sizes(), network.spec.group_names())
    if plan.schedule == "adaptive":
        return _apply_adaptive(network, plan, data=data, fit_settings=fit_settings, seed=seed)
    epochs = 0
    current = copy.deepcopy(network).eval()
    calibration = calibration_batch(data, seed=seed)
    for layer in plan.order:
        if plan.keep_ratios[layer] >= 1.0:
            continue
        # Scores are taken on the network as pruned so far: the order changes what later layers
        # see, which is the point of searching it (Anik et al.).
        scores = layer_scores(
            current,
            plan.criterion,
            calibration=calibration,
            seed=seed,
            data=data,
            fit_settings=fit_settings,
        )
        keep: list[list[int] | None] = [None] * len(current.spec.group_sizes())
        keep[layer] = keep_top(scores[layer], plan.keep_ratios[layer])
        current = remove_units(current, keep)
        # The next layer's scores, and the final network, must see correct BatchNorm statistics.
        recalibrate_batch_norm(current, data)
        if plan.schedule == "iterative" and plan.step_epochs > 0:
            current, _ = fine_tune(current, data, plan.step_epochs, fit_settings)
            epochs += plan.step_epochs
    tuned, metrics = fine_tune(current, data, plan.fine_tune_epochs, fit_settings, callbacks)
    return PlanResult(tuned, metrics, epochs + plan.fine_tune_epochs)


def layer_priorities_to_order(priorities: Sequence[float]) -> tuple[int, ...]:
    """Layers sorted by sampled priority, highest first; ties by index.

    A search samples one float per layer rather than a permutation: floats are something
    samplers can model (TPE, GP), while a categorical over n! permutations is not.
    """
    return tuple(sorted(range(len(priorities)), key=lambda i: (-priorities[i], i)))


# The adaptive loop's first step removes 1 - mean keep ratio of all neurons, within these bounds:
# a first step past half the network is rolled back almost always, and one below 5% rounds to
# no neuron in a small network.
_ADAPTIVE_FIRST_STEP = (0.05, 0.5)


def _apply_adaptive(
    network: Any,
    plan: PruningPlan,
    *,
    data: TabularDataModule,
    fit_settings: FitSettings,
    seed: int,
) -> PlanResult:
    """The accept/rollback loop with the plan's criterion, then the final fine-tuning."""
    from pruning.reductive import reductive_prune

    scores = layer_scores(
        network,
        plan.criterion,
        calibration=calibration_batch(data, seed=seed),
        seed=seed,
        data=data,
        fit_settings=fit_settings,
    )
    low, high = _ADAPTIVE_FIRST_STEP
    first_step = min(max(1.0 - sum(plan.keep_ratios) / len(plan.keep_ratios), low), high)
    # Each step fine-tunes `step_epochs` before it is judged, as the paper retrains after each
    # removal: judged as pruned, almost every step is a little worse and rolled back.
    loop = reductive_prune(
        network,
        data=data,
        fit_settings=fit_settings,
        start_fraction=first_step,
        fine_tune_epochs=plan.step_epochs,
        scores=scores,
        recalibrate=True,
    )
    tuned, metrics = fine_tune(loop.network, data, plan.fine_tune_epochs, fit_settings)
    accepted = sum(bool(step["accepted"]) for step in loop.history)
    details = {
        "kept": [len(kept) for kept in loop.kept],
        "keep_ratios": [
            round(len(kept) / width, 4)
            for kept, width in zip(loop.kept, network.spec.group_sizes(), strict=True)
        ],
        "steps_accepted": accepted,
        "steps_rolled_back": len(loop.history) - accepted,
        "first_step": round(first_step, 4),
        "stop_reason": loop.stop_reason,
    }
    # Every evaluated step fine-tuned, and so did the loop's reference (the unpruned network).
    epochs = (len(loop.history) + 1) * plan.step_epochs + plan.fine_tune_epochs
    return PlanResult(tuned, metrics, epochs, details)
