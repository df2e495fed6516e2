"""Physical unit removal: a smaller dense network, never a mask.

Every kind declares its prunable groups (`lightning_modules.networks.base`): for each unit, the
positions it owns along dimensions of `state_dict` entries (its rows, its BatchNorm entries,
a later layer's columns that read it). Removing units keeps only the kept units' positions
along each of those dimensions. The result is again a network built from a spec, so the same
shape can be retrained from scratch or logged as `spec + state_dict`. The input network is
never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import PrunableGroup, build
from pruning.choices import kept_count


def remove_units(network: Any, keep: Sequence[Sequence[int] | None]) -> Any:
    """A new network with only the kept units of each prunable group.

    Args:
        keep: one entry per prunable group, in `network.prunable_groups()` order: the indices
            of the units to keep (any order, no repeats), or None to keep the whole group.
    """
    groups: list[PrunableGroup] = network.prunable_groups()
    if len(keep) != len(groups):
        raise TabslimInputError(
            f"a pruning plan needs one entry per prunable group ({len(groups)}: "
            f"{[g.name for g in groups]}), got {len(keep)}"
        )
    indices = [_kept_indices(group, wanted) for group, wanted in zip(groups, keep, strict=True)]
    smaller = build(network.spec.with_group_sizes([len(i) for i in indices]))
    new_groups: list[PrunableGroup] = smaller.prunable_groups()
    state = {k: v.clone() for k, v in network.state_dict().items()}
    target_shapes = {k: v.shape for k, v in smaller.state_dict().items()}
    for old, new, kept in zip(groups, new_groups, indices, strict=True):
        if len(kept) == old.size:
            continue
        for old_slice, new_slice in zip(old.slices, new.slices, strict=True):
            assert old_slice.key == new_slice.key and old_slice.dim == new_slice.dim
            # New position p holds old position gather[p]: unit j of the new group is unit
            # kept[j] of the old one, position for position.
            length = target_shapes[new_slice.key][new_slice.dim]
            assert new_slice.index.numel() == length, "a group owns the whole dimension"
            gather = torch.empty(length, dtype=torch.long)
            gather[new_slice.index.flatten()] = old_slice.index[kept].flatten()
            state[old_slice.key] = state[old_slice.key].index_select(old_slice.dim, gather)
    smaller.load_state_dict(state, strict=True)
    smaller.train(network.training)
    return smaller.to(next(network.parameters()).device)


def _kept_indices(group: PrunableGroup, wanted: Sequence[int] | None) -> torch.Tensor:
    if wanted is None:
        return torch.arange(group.size)
    chosen = torch.as_tensor(sorted(int(i) for i in wanted), dtype=torch.long)
    if len(chosen) == 0:
        raise TabslimInputError(
            f"pruning would leave group {group.name} empty; keep at least one unit"
        )
    if len(set(chosen.tolist())) != len(chosen) or chosen.min() < 0 or chosen.max() >= group.size:
        raise TabslimInputError(
            f"keep indices of group {group.name} must be distinct and in [0, {group.size}), "
            f"but got {list(wanted)[:10]}"
        )
    return chosen


def keep_top(scores: torch.Tensor, keep_ratio: float) -> list[int]:
    """Indices of the highest-scoring neurons: round(ratio x width) of them, at least one.

    Ties break towards the lower index so that plans are reproducible.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise TabslimInputError(f"keep ratio must be in (0, 1], but got {keep_ratio}")
    n_keep = max(1, kept_count(keep_ratio, len(scores)))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:n_keep])
