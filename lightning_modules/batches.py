"""Batches sliced from tensors already in memory, on the device the network trains on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["InMemoryBatches"]


class InMemoryBatches:
    """Batches sliced from tensors already in memory: no per-row `__getitem__`, no workers.

    For tables of this size, DataLoader's per-row collation costs more than a small MLP's step.
    With a `device`, the tensors move there once, when the loader is built (Lightning builds
    each loader once per fit), and every batch is a slice on the device: no copy per step.
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        batches_per_item: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        self.tensors = tensors if device is None else {k: v.to(device) for k, v in tensors.items()}
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.batches_per_item = batches_per_item
        self.n_rows = len(next(iter(tensors.values())))
        self.device = next(iter(self.tensors.values())).device
        # On the CPU whatever the device: every device then draws the same order, and the CPU
        # the same as before batches could live on a device.
        self._generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def trainer_device(trainer: pl.Trainer | None) -> torch.device | None:
        """The device `trainer` trains on; None (the tensors stay where they are) without one."""
        return None if trainer is None else trainer.strategy.root_device

    @property
    def _rows_served(self) -> int:
        """Rows an epoch serves: a shuffled (training) epoch leaves out a last batch of one
        row, which BatchNorm cannot normalise; the row left out changes every epoch."""
        single = self.shuffle and self.n_rows > 1 and self.n_rows % self.batch_size == 1
        return self.n_rows - 1 if single else self.n_rows

    def __len__(self) -> int:
        batches = -(-self._rows_served // self.batch_size)
        return -(-batches // self.batches_per_item)

    def __iter__(self) -> Iterator[Any]:
        """Batch dicts; with `batches_per_item` > 1, lists of that many consecutive batches.

        The batches are the same either way (one shuffle per epoch, then slices of
        `batch_size`); grouping only changes how many a consumer receives at once.
        """
        if self.shuffle:
            order = torch.randperm(self.n_rows, generator=self._generator).to(self.device)
            # Each batch gathers its rows: a shuffled copy of the whole split per epoch was
            # 1.5 GB at 10M rows, and the gather costs microseconds beside a step.
            batches = (
                {k: v[order[start : start + self.batch_size]] for k, v in self.tensors.items()}
                for start in range(0, self._rows_served, self.batch_size)
            )
        else:
            batches = (
                {k: v[start : start + self.batch_size] for k, v in self.tensors.items()}
                for start in range(0, self.n_rows, self.batch_size)
            )
        if self.batches_per_item == 1:
            yield from batches
            return
        group: list[dict[str, torch.Tensor]] = []
        for batch in batches:
            group.append(batch)
            if len(group) == self.batches_per_item:
                yield group
                group = []
        if group:
            yield group
