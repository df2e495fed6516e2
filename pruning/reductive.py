"""Reductive pruning: remove the neurons that deviate most, while the held-out error allows.

The accept/rollback loop of Gurbych and Prymachenko (2022): remove a fraction of what remains
(0.1 at first), keep a step only if the validation error does not get worse, and otherwise roll
it back and halve the fraction, so the loop finds by itself how much to keep. The scores come
from `pruning.target_perturbation` by default; any per-neuron importance works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task
from lightning_modules.training import FitSettings
from pruning.batch_norm import recalibrate_batch_norm
from pruning.fine_tune import fine_tune
from pruning.removal import remove_units
from pruning.target_perturbation import (
    SCORE_SETTINGS,
    check_network,
    is_int,
    perturbation_scores,
    without_test_split,
)

__all__ = ["ReductiveResult", "reductive_prune", "validation_error"]

# A step whose validation error is above the current one by no more than this (relative) counts
# as a tie, i.e. not worse: removing a neuron that contributes nothing changes the error only by
# float32 rounding of the reordered sums.
TIE_TOLERANCE = 1e-6


@dataclass
class ReductiveResult:
    """The pruned network and how the loop got there.

    Args:
        history: one dict per evaluated step: step, fraction, removed (neurons tried),
            hidden (widths tried), val_error, accepted.
        val_error: the validation error of `network` (RMSE, or log loss for classification).
        kept: per hidden layer, the indices in the input network of the neurons kept.
        stop_reason: "min_fraction", "max_steps" or "nothing_to_remove".
    """

    network: Any
    history: list[dict[str, Any]]
    val_error: float
    kept: list[list[int]] = field(default_factory=list)
    stop_reason: str = ""


def validation_error(metrics: dict[str, float], task: Task) -> float:
    """The error the loop minimises: RMSE for regression, log loss for classification, and
    1 - PR AUC for anomaly detection."""
    if task.is_anomaly:
        return 1.0 - metrics["pr_auc"]
    return metrics["rmse"] if task.is_regression else metrics["log_loss"]


def _check_scores(scores: Sequence[torch.Tensor], widths: Sequence[int]) -> list[torch.Tensor]:
    shapes = [tuple(torch.as_tensor(s).shape) for s in scores]
    if shapes != [(w,) for w in widths]:
        raise TabslimInputError(
            f"scores need one vector per hidden layer of widths {list(widths)}, "
            f"but got shapes {shapes}"
        )
    checked = [torch.as_tensor(s, dtype=torch.float64).detach().cpu() for s in scores]
    if not all(bool(torch.isfinite(s).all()) for s in checked):
        raise TabslimInputError("scores must be finite, but some are NaN or infinite")
    return checked


def _choose_removal(
    scores: list[torch.Tensor], remaining: list[list[int]], n_remove: int
) -> set[tuple[int, int]]:
    """The `n_remove` lowest-scoring remaining neurons, pooled over layers, never a layer's last.

    Ties break towards the earlier layer and lower index, so plans are reproducible.
    """
    pooled = sorted(
        (float(scores[layer][i]), layer, i) for layer, kept in enumerate(remaining) for i in kept
    )
    left = [len(kept) for kept in remaining]
    chosen: set[tuple[int, int]] = set()
    for _, layer, i in pooled:
        if len(chosen) == n_remove:
            break
        if left[layer] > 1:
            chosen.add((layer, i))
            left[layer] -= 1
    return chosen


def _check_loop_settings(
    start_fraction: float,
    min_fraction: float,
    max_steps: int,
    fine_tune_epochs: int,
    score_kwargs: dict[str, Any],
) -> None:
    for name, value in [("start_fraction", start_fraction), ("min_fraction", min_fraction)]:
        if not 0.0 < value < 1.0:
            raise TabslimInputError(f"{name} must be in (0, 1), but got {name}={value}")
    if not is_int(max_steps) or max_steps < 1:
        raise TabslimInputError(f"max_steps must be an integer >= 1, but got {max_steps=}")
    if not is_int(fine_tune_epochs) or fine_tune_epochs < 0:
        raise TabslimInputError(
            f"fine_tune_epochs must be an integer >= 0, but got {fine_tune_epochs=}"
        )
    unknown = sorted(set(score_kwargs) - SCORE_SETTINGS)
    if unknown:
        raise TabslimInputError(
            f"unknown target perturbation settings {unknown}; expected {sorted(SCORE_SETTINGS)}"
        )


def _without(remaining: list[list[int]], chosen: set[tuple[int, int]]) -> list[list[int]]:
    """Per layer, the input network's neuron indices still kept once `chosen` are removed."""
    return [
        [i for i in layer_kept if (layer, i) not in chosen]
        for layer, layer_kept in enumerate(remaining)
    ]


def _try_removal(
    current: Any,
    remaining: list[list[int]],
    chosen: set[tuple[int, int]],
    data: TabularDataModule,
    fine_tune_epochs: int,
    fit_settings: FitSettings,
    recalibrate: bool,
) -> tuple[Any, float]:
    """`current` without `chosen` (indices of the input network), fine-tuned, and its error."""
    # Positions in `current`, whose layer l holds the input's neurons `remaining[l]`.
    local = [
        [k for k, i in enumerate(layer_kept) if (layer, i) not in chosen]
        for layer, layer_kept in enumerate(remaining)
    ]
    smaller = remove_units(current, local)
    if recalibrate:
        recalibrate_batch_norm(smaller, data)
    candidate, metrics = fine_tune(smaller, data, fine_tune_epochs, fit_settings)
    return candidate, validation_error(metrics, data.task)


def _scores_to_use(
    network: Any,
    scores: Sequence[torch.Tensor] | None,
    data: TabularDataModule,
    fit_settings: FitSettings,
    score_kwargs: dict[str, Any],
) -> list[torch.Tensor]:
    """The scores the loop ranks by, checked: those given, or else target perturbation's."""
    if scores is None:
        scores = perturbation_scores(network, data=data, fit_settings=fit_settings, **score_kwargs)
    elif score_kwargs:
        raise TabslimInputError(
            f"settings {sorted(score_kwargs)} only apply when the scores are computed here, "
            "but scores were given"
        )
    return _check_scores(scores, network.spec.group_sizes())


def _step_record(
    step: int,
    fraction: float,
    chosen: set[tuple[int, int]],
    kept: list[list[int]],
    error: float,
    accepted: bool,
) -> dict[str, Any]:
    """One row of `ReductiveResult.history`."""
    return {
        "step": step,
        "fraction": fraction,
        "removed": len(chosen),
        "hidden": [len(layer_kept) for layer_kept in kept],
        "val_error": error,
        "accepted": accepted,
    }


def reductive_prune(
    network: Any,
    *,
    data: TabularDataModule,
    fit_settings: FitSettings,
    start_fraction: float = 0.1,
    min_fraction: float = 0.01,
    max_steps: int = 20,
    fine_tune_epochs: int = 0,
    scores: Sequence[torch.Tensor] | None = None,
    recalibrate: bool = False,
    **score_kwargs: Any,
) -> ReductiveResult:
    """Remove the neurons that deviate most, a fraction at a time, while validation allows.

    Each step removes `round(fraction x neurons remaining)` of the lowest-scoring neurons, pooled
    over all hidden layers (a layer keeps at least one), fine-tunes for `fine_tune_epochs`, and
    measures the validation error (`validation_error`). The step is accepted if that error is not
    worse than the current one (ties within float rounding count as not worse, so neurons that
    contribute nothing are removed); otherwise it is rolled back and the fraction halved. The
    loop stops when the fraction falls below `min_fraction`, after `max_steps` evaluated steps, or
    when the step rounds to no neuron or no layer has a neuron to spare.

    The reference error is that of the input network after the same `fine_tune_epochs` (none:
    as it is), so a step is not credited with what fine-tuning alone gains. The input network is
    not modified; the test split is not read.

    Args:
        fit_settings: settings for fine-tuning and, without `scores`, for the perturbed copies.
        scores: per hidden layer, one importance per neuron (higher = keep); by default
            `perturbation_scores(network, data=..., fit_settings=..., **score_kwargs)`.
        recalibrate: re-estimate BatchNorm statistics on the training rows after each removal
            (the paper's loop does not; the product's plans do, see `pruning.batch_norm`).
        score_kwargs: `factors`, `folds`, `epochs`, `seed` for `perturbation_scores`.
    """
    network = check_network(network)
    _check_loop_settings(start_fraction, min_fraction, max_steps, fine_tune_epochs, score_kwargs)
    checked = _scores_to_use(network, scores, data, fit_settings, score_kwargs)

    view = without_test_split(data)
    start, metrics = fine_tune(network, view, fine_tune_epochs, fit_settings)
    return _accept_or_roll_back(
        start,
        validation_error(metrics, data.task),
        checked,
        view,
        fit_settings,
        start_fraction=start_fraction,
        min_fraction=min_fraction,
        max_steps=max_steps,
        fine_tune_epochs=fine_tune_epochs,
        recalibrate=recalibrate,
    )


def _accept_or_roll_back(
    current: Any,
    current_error: float,
    scores: list[torch.Tensor],
    view: TabularDataModule,
    fit_settings: FitSettings,
    *,
    start_fraction: float,
    min_fraction: float,
    max_steps: int,
    fine_tune_epochs: int,
    recalibrate: bool,
) -> ReductiveResult:
    """The loop of `reductive_prune`, from `current` (already fine-tuned) and its error."""
    remaining = [list(range(len(layer))) for layer in scores]
    fraction = start_fraction
    history: list[dict[str, Any]] = []
    # Errors of candidates tried since the last accepted step: halving a small fraction often
    # rounds to the same neurons again, and training is deterministic, so the result is known.
    tried: dict[frozenset[tuple[int, int]], tuple[Any, float]] = {}
    stop_reason = "max_steps"
    while len(history) < max_steps:
        if fraction < min_fraction:
            stop_reason = "min_fraction"
            break
        n_remove = round(fraction * sum(len(kept) for kept in remaining))
        chosen = _choose_removal(scores, remaining, n_remove)
        if not chosen:
            stop_reason = "nothing_to_remove"
            break
        key = frozenset(chosen)
        if key not in tried:
            tried[key] = _try_removal(
                current, remaining, chosen, view, fine_tune_epochs, fit_settings, recalibrate
            )
        candidate, error = tried[key]
        accepted = error <= current_error + TIE_TOLERANCE * abs(current_error)
        kept = _without(remaining, chosen)
        history.append(_step_record(len(history), fraction, chosen, kept, error, accepted))
        if accepted:
            current, current_error, remaining = candidate, error, kept
            tried.clear()
        else:
            fraction /= 2
    return ReductiveResult(
        network=current.cpu().eval(),
        history=history,
        val_error=current_error,
        kept=remaining,
        stop_reason=stop_reason,
    )
