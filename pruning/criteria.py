"""Unit importance criteria: one score per unit of every prunable group of a network.

Higher means more important, so `keep_top(scores[i], ratio)` keeps the best units of group i.
Criteria read units through the network-family interface (`lightning_modules.networks.base`): a
group's weight slices for the magnitude criteria, its BatchNorm slices for `bn_scale`, and its
gate (the module whose output holds the units) for the data criteria.
Criteria only read the network: its weights, gradients, hooks and train/eval flags are as they
were when a criterion returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import PrunableGroup, evaluating
from lightning_modules.networks.base import unit_values
from pruning.choices import CRITERIA, check_criterion

if TYPE_CHECKING:
    from lightning_modules.data import TabularDataModule

__all__ = ["CRITERIA", "calibration_batch", "check_criterion", "layer_scores"]


def layer_scores(
    network: Any,
    criterion: str,
    *,
    calibration: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> list[torch.Tensor]:
    """Importance of each unit of each prunable group; higher = more important.

    - "l1", "l2": norm of the unit's incoming weights (an MLP neuron's weight row; a head's
      query, key and value rows; a ReGLU unit's value and gate rows). Biases are left out: they
      shift a unit rather than weight any input, and a following BatchNorm cancels them anyway.
    - "bn_scale": mean |gamma| of the unit's BatchNorm entries (network slimming, Liu et al.
      2017); only for groups normalised by BatchNorm.
    - "activation_mean": mean |output| of the unit at its gate over the calibration rows.
    - "apoz": 1 - the share of calibration outputs at the gate that are zero (Hu et al. 2016).
      For GELU and SiLU, which are rarely exactly zero, values <= 0 count.
    - "taylor": |mean over rows of output x dLoss/doutput| at the gate (Molchanov et al. 2017),
      the first-order change in the mean loss when the unit is zeroed for the whole batch.
      Cross-entropy for int64 targets (N,), squared error for float targets (N, 1).
    - "random": seeded uniform scores, the control.
    - "target_perturbation": `pruning.target_perturbation.perturbation_scores`.

    Data criteria run in eval mode: BatchNorm uses its running statistics (so rows do not
    affect each other) and dropout is off.

    Args:
        calibration: a batch {"x_num", "x_cat", "y"} as the data module serves it; needed by
            "activation_mean", "apoz" and "taylor" ("y" only by "taylor").
        seed: for "random" and "target_perturbation".
        kwargs: passed on to "target_perturbation" (e.g. data=, fit_settings=); other criteria
            ignore them, so a caller may pass the same arguments whatever the criterion.

    Returns:
        one detached 1-D CPU tensor per prunable group, of that group's size.
    """
    check_criterion(criterion)
    if criterion == "target_perturbation":
        # Imported here: it trains networks, and importing it must not be the price of `l1`.
        from pruning.target_perturbation import perturbation_scores

        return [s.detach().cpu() for s in perturbation_scores(network, seed=seed, **kwargs)]
    groups: list[PrunableGroup] = network.prunable_groups()
    if criterion in ("l1", "l2"):
        scores = _weight_norms(network, groups, p=1 if criterion == "l1" else 2)
    elif criterion == "bn_scale":
        scores = _bn_scales(network, groups)
    elif criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        scores = [torch.rand(group.size, generator=generator) for group in groups]
    else:
        batch = _checked_calibration(network, criterion, calibration)
        if criterion == "taylor":
            scores = _taylor(network, groups, batch)
        else:
            scores = _activation_scores(network, groups, criterion, batch)
    return [s.detach().float().cpu() for s in scores]


def calibration_batch(
    data: TabularDataModule, size: int = 512, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A seeded sample of `size` training rows (all of them if there are fewer).

    Training rows, because validation rows judge the pruned network and must not choose it.
    """
    if size < 1:
        raise TabslimInputError(f"calibration batch size must be at least 1, but got {size=}")
    tensors = data.tensors["train"]
    n_rows = len(tensors["y"])
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n_rows, generator=generator)[:size]
    return {name: tensor[rows] for name, tensor in tensors.items()}


def _weight_norms(network: Any, groups: list[PrunableGroup], p: int) -> list[torch.Tensor]:
    """The p-norm of each unit's incoming weights, over all of its group's weight slices."""
    state = network.state_dict()
    return [
        torch.cat([unit_values(state, s) for s in g.slices_of("weight")], 1).norm(p=p, dim=1)
        for g in groups
    ]


def _activation_scores(
    network: Any, groups: list[PrunableGroup], criterion: str, batch: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Each unit's "activation_mean" or "apoz", from its gate's outputs on `batch`."""
    outputs = _gate_outputs(network, groups, batch)
    scores = []
    for group, out in zip(groups, outputs, strict=True):
        # out: (rows, positions) at the gate; a unit's score averages its positions.
        # ReLU outputs are never negative, so `<= 0` is `== 0` there.
        value = out.abs() if criterion == "activation_mean" else (out > 0).float()
        scores.append(value.mean(dim=0)[group.gate.index].mean(dim=1))
    return scores


def _bn_scales(network: Any, groups: list[PrunableGroup]) -> list[torch.Tensor]:
    state = network.state_dict()
    scales = []
    for group in groups:
        norms = [s for s in group.slices_of("norm") if s.batch_norm]
        if not norms:
            detail = (
                "the network has batch_norm=False"
                if getattr(network.spec, "batch_norm", True) is False
                else f"group {group.name} of the {network.spec.kind} network has none"
            )
            raise TabslimInputError(
                f"pruning criterion 'bn_scale' needs BatchNorm layers, but {detail}; "
                "use another criterion"
            )
        per_norm = [unit_values(state, s).abs().mean(dim=1) for s in norms]
        scales.append(torch.stack(per_norm).mean(dim=0))
    return scales


def _checked_calibration(
    network: Any, criterion: str, calibration: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """The calibration batch on the network's device, or a one-line error."""
    if calibration is None:
        raise TabslimInputError(
            f"pruning criterion {criterion!r} needs a calibration batch of training rows, "
            "but got calibration=None"
        )
    needed = ["x_num", "x_cat", "y"] if criterion == "taylor" else ["x_num", "x_cat"]
    missing = [key for key in needed if key not in calibration]
    if missing:
        raise TabslimInputError(
            f"calibration batch for {criterion!r} lacks {missing}; it has {sorted(calibration)}"
        )
    rows = {key: len(value) for key, value in calibration.items() if key in needed}
    if len(set(rows.values())) != 1 or 0 in rows.values():
        raise TabslimInputError(
            f"calibration batch needs the same number of rows (at least 1) in each tensor, "
            f"but got {rows}"
        )
    device = next(network.parameters()).device
    return {key: value.to(device) for key, value in calibration.items()}


@contextmanager
def _gate_hooks(
    network: Any,
    groups: list[PrunableGroup],
    hook: Callable[[int, torch.Tensor], torch.Tensor | None],
) -> Iterator[None]:
    """`hook(group, output)` on each group's gate module while inside; removed on the way out.

    A hook that returns a tensor replaces the module's output.
    """

    def for_group(group: int) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor | None]:
        return lambda _module, _inputs, output: hook(group, output)

    modules = dict(network.named_modules())
    handles = [
        modules[group.gate.module].register_forward_hook(for_group(i))
        for i, group in enumerate(groups)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _rows_by_position(output: torch.Tensor, dim: int) -> torch.Tensor:
    """(rows, positions): the gate's dimension last, every other dimension a row."""
    moved = output.movedim(dim, -1)
    return moved.reshape(-1, moved.shape[-1])


def _gate_outputs(
    network: Any, groups: list[PrunableGroup], batch: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Each group's gate output as (rows, positions), in eval mode."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(group: int, output: torch.Tensor) -> None:
        outputs[group] = _rows_by_position(output.detach(), groups[group].gate.dim)

    with evaluating(network), _gate_hooks(network, groups, keep), torch.no_grad():
        network(batch["x_num"], batch["x_cat"])
    return [outputs[i] for i in range(len(groups))]


def _taylor(
    network: Any, groups: list[PrunableGroup], batch: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """|mean over rows n of a_nu * d loss_n / d a_nu| for each unit u of each group.

    Each gate output is multiplied by a gate of ones, one entry per unit spread over the unit's
    positions. With the loss summed over rows, d loss / d gate_u = sum of a * d loss / d a over
    rows and the unit's positions, so one backward pass gives every sum, the parameters' .grad
    stay untouched, and frozen parameters do not matter.
    """
    device = next(network.parameters()).device
    gates = [torch.ones(group.size, device=device, requires_grad=True) for group in groups]
    owners = []
    for group in groups:
        # owner[p] = the unit that owns gate position p
        index = group.gate.index
        owner = torch.empty(index.numel(), dtype=torch.long)
        owner[index.flatten()] = torch.arange(group.size).repeat_interleave(index.shape[1])
        owners.append(owner.to(device))

    def gate(i: int, output: torch.Tensor) -> torch.Tensor:
        dim = groups[i].gate.dim % output.dim()
        shape = [1] * output.dim()
        shape[dim] = -1
        return output * gates[i][owners[i]].view(shape)

    with evaluating(network), _gate_hooks(network, groups, gate), torch.enable_grad():
        output = network(batch["x_num"], batch["x_cat"])
        loss = _summed_loss(output, batch["y"])
        sums = torch.autograd.grad(loss, gates)
    n_rows = len(batch["y"])
    return [(s / n_rows).abs() for s in sums]


def _summed_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss summed over rows; the task is read from y's dtype."""
    if y.is_floating_point():
        if y.shape != output.shape:
            raise TabslimInputError(
                f"regression targets must have the network's output shape {tuple(output.shape)}, "
                f"but got y of shape {tuple(y.shape)}"
            )
        return F.mse_loss(output, y, reduction="sum")
    if y.dtype == torch.bool or y.is_complex() or y.dim() != 1:
        raise TabslimInputError(
            "calibration targets must be int64 class indices (N,) or float values (N, 1), "
            f"but got y of dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    return F.cross_entropy(output, y.long(), reduction="sum")
