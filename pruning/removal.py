"""Physical neuron removal: a smaller dense network, never a mask.

Removing neuron j of hidden layer i deletes row j of that layer's weight and bias, entry j of
its BatchNorm (affine parameters and running statistics), and column j of the next linear layer.
The result is again an `MLP` built from a spec, so the same shape can be retrained from scratch
or logged as `spec + state_dict`. The input network is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLP, build


def remove_neurons(network: MLP, keep: Sequence[Sequence[int] | None]) -> MLP:
    """A new network with only the kept neurons of each hidden layer.

    Args:
        keep: one entry per hidden layer: the indices of the neurons to keep (any order,
            no repeats), or None to keep the whole layer.
    """
    widths = network.spec.hidden
    if len(keep) != len(widths):
        raise TabslimInputError(
            f"a pruning plan needs one entry per hidden layer ({len(widths)}), got {len(keep)}"
        )
    indices: list[torch.Tensor] = []
    for layer, (width, wanted) in enumerate(zip(widths, keep, strict=True)):
        if wanted is None:
            indices.append(torch.arange(width))
            continue
        chosen = torch.as_tensor(sorted(int(i) for i in wanted), dtype=torch.long)
        if len(chosen) == 0:
            raise TabslimInputError(
                f"pruning would leave hidden layer {layer} empty; keep at least one neuron"
            )
        if len(set(chosen.tolist())) != len(chosen) or chosen.min() < 0 or chosen.max() >= width:
            raise TabslimInputError(
                f"keep indices of layer {layer} must be distinct and in [0, {width}), "
                f"but got {list(wanted)[:10]}"
            )
        indices.append(chosen)

    smaller = build(network.spec.with_hidden([len(i) for i in indices]))
    source = network.state_dict()
    state = {k: v.clone() for k, v in source.items()}
    for layer, kept in enumerate(indices):
        prefix = f"blocks.{layer}"
        # Rows of this layer: (out, in) weight and (out,) bias and BatchNorm vectors.
        for name in ("linear.weight", "linear.bias", "norm.weight", "norm.bias",
                     "norm.running_mean", "norm.running_var"):  # fmt: skip
            key = f"{prefix}.{name}"
            if key in state:
                state[key] = state[key].index_select(0, kept)
        # Columns of the next linear layer, which reads this layer's outputs.
        following = (
            f"blocks.{layer + 1}.linear.weight" if layer + 1 < len(indices) else "head.weight"
        )
        state[following] = state[following].index_select(1, kept)
    smaller.load_state_dict(state, strict=True)
    smaller.train(network.training)
    return smaller.to(next(network.parameters()).device)


def kept_count(keep_ratio: float, width: int) -> int:
    """round(ratio x width), halves up: Python's round() takes 2.5 to 2, which surprises."""
    return math.floor(keep_ratio * width + 0.5)


def keep_top(scores: torch.Tensor, keep_ratio: float) -> list[int]:
    """Indices of the highest-scoring neurons: round(ratio x width) of them, at least one.

    Ties break towards the lower index so that plans are reproducible.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise TabslimInputError(f"keep ratio must be in (0, 1], but got {keep_ratio}")
    n_keep = max(1, kept_count(keep_ratio, len(scores)))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:n_keep])
