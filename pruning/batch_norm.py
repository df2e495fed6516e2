"""Re-estimating BatchNorm statistics after neurons were removed.

Removing neurons from layer i changes the inputs of layer i+1, but its BatchNorm still holds
running statistics of the unpruned network. Evaluated as is, the pruned network is distorted,
and so are the data-driven scores (activation, APoZ, Taylor) of layers pruned after it. One pass
over training rows in train mode, with no gradient and no weight changed, puts them right.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules.data import TabularDataModule


@torch.no_grad()
def recalibrate_batch_norm(
    network: nn.Module, data: TabularDataModule, batch_size: int = 512
) -> None:
    """Replace every BatchNorm's running mean and variance by those of the training rows.

    Only buffers change; weights do not. The network keeps the mode it had.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    was_training = network.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below, not an EMA
    network.train()
    # Dropout is active in train mode; statistics are taken with it off, as at inference.
    dropouts = [m for m in network.modules() if isinstance(m, nn.Dropout)]
    for dropout in dropouts:
        dropout.eval()
    try:
        train = data.tensors["train"]
        device = next(network.parameters()).device
        for start in range(0, len(train["y"]), batch_size):
            x_num = train["x_num"][start : start + batch_size].to(device)
            x_cat = train["x_cat"][start : start + batch_size].to(device)
            if len(x_num) > 1:  # BatchNorm needs two rows for a variance
                network(x_num, x_cat)
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        network.train(was_training)
