"""Neuron importance criteria: one score per neuron of every hidden layer of an `MLP`.

Higher means more important, so `keep_top(scores[i], ratio)` keeps the best neurons of layer i.
Criteria only read the network: its weights, gradients, hooks and train/eval flags are as they
were when a criterion returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLP, Block, evaluating
from pruning.choices import CRITERIA, check_criterion

if TYPE_CHECKING:
    from lightning_modules.data import TabularDataModule

__all__ = ["CRITERIA", "calibration_batch", "check_criterion", "layer_scores"]


# Criteria that look at what the network computes on real rows.
_NEEDS_CALIBRATION = ("activation_mean", "apoz", "taylor")


def layer_scores(
    network: MLP,
    criterion: str,
    *,
    calibration: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> list[torch.Tensor]:
    """Importance of each neuron of each hidden layer; higher = more important.

    - "l1", "l2": norm of the neuron's incoming weight row. The bias is left out: it shifts the
      neuron rather than weighting any input, and a following BatchNorm cancels it anyway.
    - "bn_scale": |gamma| of the neuron's BatchNorm entry (network slimming, Liu et al. 2017).
    - "activation_mean": mean |post-activation output| over the calibration rows.
    - "apoz": 1 - the share of calibration rows where the post-activation output is zero
      (Hu et al. 2016). For GELU and SiLU, which are rarely exactly zero, values <= 0 count.
    - "taylor": |mean over rows of activation x dLoss/dactivation| (Molchanov et al. 2017), the
      first-order change in the mean loss when the neuron is zeroed for the whole batch.
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
        one detached 1-D CPU tensor per hidden layer, of that layer's width.
    """
    check_criterion(criterion)
    if criterion == "target_perturbation":
        # Imported here: it trains networks, and importing it must not be the price of `l1`.
        from pruning.target_perturbation import perturbation_scores

        return [s.detach().cpu() for s in perturbation_scores(network, seed=seed, **kwargs)]
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        # weight: (width, d_in); one norm per row, i.e. per neuron.
        scores = [block.linear.weight.detach().norm(p=p, dim=1) for block in _blocks(network)]
    elif criterion == "bn_scale":
        scores = _bn_scales(network)
    elif criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        scores = [torch.rand(width, generator=generator) for width in network.spec.hidden]
    else:
        batch = _checked_calibration(network, criterion, calibration)
        if criterion == "taylor":
            scores = _taylor(network, batch)
        else:
            outputs = _post_activations(network, batch)
            if criterion == "activation_mean":
                scores = [out.abs().mean(dim=0) for out in outputs]
            else:
                # ReLU outputs are never negative, so `<= 0` is `== 0` there.
                scores = [1.0 - (out <= 0).float().mean(dim=0) for out in outputs]
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


def _blocks(network: MLP) -> list[Block]:
    # ModuleList iterates as plain Modules; the MLP only ever holds Blocks.
    blocks = list(network.blocks)
    assert all(isinstance(block, Block) for block in blocks)
    return cast(list[Block], blocks)


def _bn_scales(network: MLP) -> list[torch.Tensor]:
    if not network.spec.batch_norm:
        raise TabslimInputError(
            "pruning criterion 'bn_scale' needs BatchNorm layers, but the network has "
            "batch_norm=False; use another criterion"
        )
    scales = []
    for block in _blocks(network):
        assert isinstance(block.norm, nn.BatchNorm1d), "spec.batch_norm implies BatchNorm1d"
        assert block.norm.weight is not None, "tabslim's BatchNorm is affine"
        scales.append(block.norm.weight.detach().abs())
    return scales


def _checked_calibration(
    network: MLP, criterion: str, calibration: dict[str, torch.Tensor] | None
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
def _activation_hooks(
    network: MLP, hook: Callable[[int, torch.Tensor], torch.Tensor | None]
) -> Iterator[None]:
    """`hook(layer, output)` on each block's activation while inside; removed on the way out.

    A hook that returns a tensor replaces the activation's output.
    """

    def for_layer(layer: int) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor | None]:
        return lambda _module, _inputs, output: hook(layer, output)

    handles = [
        block.activation.register_forward_hook(for_layer(layer))
        for layer, block in enumerate(_blocks(network))
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _post_activations(network: MLP, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each hidden layer's output after its activation, before dropout: (N, width_i)."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(layer: int, output: torch.Tensor) -> None:
        outputs[layer] = output.detach()

    with evaluating(network), _activation_hooks(network, keep), torch.no_grad():
        network(batch["x_num"], batch["x_cat"])
    return [outputs[layer] for layer in range(len(network.blocks))]


def _taylor(network: MLP, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """|mean over rows n of a_nj * d loss_n / d a_nj| for each neuron j of each layer.

    Each activation is multiplied by a gate of ones. With the loss summed over rows,
    d loss / d gate_j = sum_n a_nj * d loss_n / d a_nj, so one backward pass gives every sum,
    the parameters' .grad stay untouched, and frozen parameters do not matter.
    """
    device = next(network.parameters()).device
    gates = [torch.ones(width, device=device, requires_grad=True) for width in network.spec.hidden]

    def gate(layer: int, output: torch.Tensor) -> torch.Tensor:
        return output * gates[layer]  # (N, width) * (width,)

    with evaluating(network), _activation_hooks(network, gate), torch.enable_grad():
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
