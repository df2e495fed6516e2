"""Metrics of a network as it is, without training: after pruning, before fine-tuning."""

from __future__ import annotations

from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.training import FitSettings, TabularModule, evaluate, make_trainer


def evaluate_network(
    network: nn.Module, data: TabularDataModule, split: str = "val", *, accelerator: str = "cpu"
) -> dict[str, float]:
    """The task's metrics of `network` on one split ("val" or "test"), names without prefix."""
    module = TabularModule.for_data(network, data)
    trainer = make_trainer(FitSettings(max_epochs=1, accelerator=accelerator), [])
    metrics = evaluate(module, trainer, data, split)
    network.cpu().eval()
    return metrics
