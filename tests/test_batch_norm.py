from __future__ import annotations

import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import MLPSpec, build
from pruning.batch_norm import recalibrate_batch_norm
from pruning.removal import remove_units


def test_recalibration_sets_the_training_rows_statistics_and_nothing_else(
    small_data: TabularDataModule,
) -> None:
    data = small_data
    network = build(MLPSpec(hidden=(16, 8), **data.network_inputs()), seed=0)
    network.eval()
    pruned = remove_units(network, [list(range(0, 16, 2)), None])
    weights = {k: v.clone() for k, v in pruned.state_dict().items() if "running" not in k}
    recalibrate_batch_norm(pruned, data, batch_size=10_000)

    train = data.tensors["train"]
    with torch.no_grad():
        embedded = torch.cat(
            [train["x_num"], *(e(train["x_cat"][:, i]) for i, e in enumerate(pruned.embeddings))],
            dim=1,
        )
        first = pruned.blocks[0].linear(embedded)
        # In the recalibration pass BatchNorm normalises by the batch's own (biased) statistics.
        norm = pruned.blocks[0].norm
        normalised = (first - first.mean(0)) / torch.sqrt(first.var(0, unbiased=False) + norm.eps)
        second_in = torch.relu(normalised * norm.weight + norm.bias)
        second = pruned.blocks[1].linear(second_in)
    # One batch of all training rows: the running statistics are exactly theirs.
    assert torch.allclose(pruned.blocks[0].norm.running_mean, first.mean(0), atol=1e-5)
    assert torch.allclose(pruned.blocks[1].norm.running_mean, second.mean(0), atol=1e-5)
    assert torch.allclose(pruned.blocks[1].norm.running_var, second.var(0), atol=1e-4)
    assert not pruned.training
    assert pruned.blocks[0].norm.momentum == network.blocks[0].norm.momentum
    after = {k: v for k, v in pruned.state_dict().items() if "running" not in k}
    assert all(torch.equal(weights[k], after[k]) for k in weights if "num_batches" not in k)
