"""Fine-tuning a pruned network for a few epochs with the same Lightning module as training."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from pytorch_lightning.callbacks import Callback

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import TabularNetwork
from lightning_modules.training import FitSettings, fit

# Fine-tuning starts from trained weights, so it takes smaller steps than training from scratch.
FINE_TUNE_LR_FACTOR = 0.3


def fine_tune(
    network: Any,
    data: TabularDataModule,
    epochs: int,
    config: FitSettings,
    callbacks: list[Callback] | None = None,
) -> tuple[Any, dict[str, float]]:
    """`epochs` epochs of training on a copy of `network`; returns it with its val metrics.

    With 0 epochs the copy is only evaluated. Early stopping is off: the epoch budget is the
    point (Klemetti et al. found one epoch needed and more giving diminishing returns), but the
    best validation epoch's weights are kept.
    """
    tuned = copy.deepcopy(network)
    if epochs <= 0:
        return tuned, evaluate_network(tuned, data, "val")
    settings = dataclasses.replace(
        config,
        max_epochs=epochs,
        patience=epochs + 1,
        lr=config.lr * FINE_TUNE_LR_FACTOR,
        progress_bar=False,
    )
    result = fit(tuned, data, settings, extra_callbacks=callbacks, evaluate_test=False)
    assert isinstance(result.network, TabularNetwork)
    return result.network, result.val_metrics
