from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLP, MLPSpec, build, load
from pruning.removal import keep_top, remove_units

# (hidden widths, which hidden layers to prune: an index or "all", activation)
CASES = [
    ((5,), 0, "relu"),
    ((6, 4), 0, "relu"),
    ((6, 4), 1, "relu"),
    ((8, 5, 3), 0, "relu"),
    ((8, 5, 3), 1, "gelu"),
    ((8, 5, 3), 2, "silu"),
    ((6, 4), "all", "relu"),
    ((8, 5, 3), "all", "gelu"),
]

# The tensors here are tiny: one torch thread (see conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_like(
    hidden: tuple[int, ...],
    cats: tuple[int, ...] = (),
    *,
    batch_norm: bool = True,
    activation: str = "relu",
) -> MLP:
    """A seeded network whose BatchNorm statistics and affine parameters are not the defaults."""
    spec = MLPSpec(
        d_num=4,
        d_out=3,
        hidden=hidden,
        cat_cardinalities=cats,
        d_embedding=3,
        batch_norm=batch_norm,
        activation=activation,
    )
    network = build(spec, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.weight.copy_(torch.randn(module.num_features, generator=generator))
                module.bias.copy_(torch.randn(module.num_features, generator=generator))
        # Train-mode forwards move the running statistics away from mean 0, variance 1.
        network.train()
        for _ in range(3):
            network(*_inputs(network, 32, seed=2))
    return network.eval()


def _inputs(network: MLP, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x_num = 3 * torch.randn(batch, network.spec.d_num, generator=generator) + 1
    columns = [
        torch.randint(0, c, (batch,), generator=generator) for c in network.spec.cat_cardinalities
    ]
    x_cat = torch.stack(columns, dim=1) if columns else torch.zeros(batch, 0, dtype=torch.long)
    return x_num, x_cat


def _removed(width: int, layer: int) -> list[int]:
    """A seeded, irregular choice of neurons to remove, always leaving at least one."""
    generator = torch.Generator().manual_seed(10 + layer)
    n_remove = max(1, width // 2)
    return sorted(torch.randperm(width, generator=generator)[:n_remove].tolist())


def _outgoing(network: MLP, layer: int) -> nn.Linear:
    """The linear layer that reads hidden layer `layer`: the next block's, or the head."""
    if layer + 1 < len(network.blocks):
        following = network.blocks[layer + 1].linear
        assert isinstance(following, nn.Linear)
        return following
    return network.head


def _state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in network.state_dict().items()}


@pytest.mark.parametrize("hidden, layers, activation", CASES)
@pytest.mark.parametrize("cats", [(), (4, 3)])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_removing_neurons_with_zero_outgoing_weights_keeps_the_outputs(
    hidden: tuple[int, ...],
    layers: int | str,
    activation: str,
    cats: tuple[int, ...],
    batch_norm: bool,
) -> None:
    network = _trained_like(hidden, cats, batch_norm=batch_norm, activation=activation)
    pruned_layers = range(len(hidden)) if layers == "all" else [int(layers)]
    keep: list[list[int] | None] = [None] * len(hidden)
    for layer in pruned_layers:
        removed = _removed(hidden[layer], layer)
        # These neurons no longer reach the output, so removing them must change nothing.
        with torch.no_grad():
            _outgoing(network, layer).weight[:, removed] = 0.0
        keep[layer] = [j for j in range(hidden[layer]) if j not in removed]
    inputs = _inputs(network, 64, seed=3)

    pruned = remove_units(network, keep).eval()

    widths = [hidden[i] if kept is None else len(kept) for i, kept in enumerate(keep)]
    assert list(pruned.spec.hidden) == widths
    assert [block.linear.out_features for block in pruned.blocks] == widths
    assert pruned.head.in_features == widths[-1]
    assert torch.allclose(pruned(*inputs), network(*inputs), atol=1e-5)


def test_neurons_that_still_matter_change_the_outputs() -> None:
    # The converse of the invariant: without zeroing, removal is visible, so the test above
    # would catch a removal that dropped the wrong rows or columns.
    network = _trained_like((6, 4))
    inputs = _inputs(network, 64)
    pruned = remove_units(network, [[0, 1, 2], None]).eval()
    assert not torch.allclose(pruned(*inputs), network(*inputs), atol=1e-3)


@pytest.mark.parametrize("training", [True, False])
def test_input_network_is_untouched(training: bool) -> None:
    network = _trained_like((6, 5), (4,))
    network.train(training)
    before = _state(network)

    pruned = remove_units(network, [[0, 2, 5], [1, 3]])

    after = network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert network.spec.hidden == (6, 5)
    assert all(module.training == training for module in network.modules())
    assert pruned.training == training
    # The result shares no storage with the input: changing one leaves the other alone.
    with torch.no_grad():
        pruned.blocks[0].linear.weight.fill_(7.0)
    assert torch.equal(network.blocks[0].linear.weight, before["blocks.0.linear.weight"])


def test_kept_rows_are_the_chosen_ones_in_index_order() -> None:
    network = _trained_like((6, 4))
    pruned = remove_units(network, [[4, 1], None])
    old, new = network.state_dict(), pruned.state_dict()
    for name in ("linear.weight", "linear.bias", "norm.weight", "norm.running_var"):
        assert torch.equal(new[f"blocks.0.{name}"], old[f"blocks.0.{name}"][[1, 4]])
    assert torch.equal(new["blocks.1.linear.weight"], old["blocks.1.linear.weight"][:, [1, 4]])
    assert torch.equal(new["head.weight"], old["head.weight"])


@pytest.mark.parametrize("cats", [(), (4, 3)])
def test_pruned_network_round_trips_as_spec_and_state_dict(cats: tuple[int, ...]) -> None:
    network = _trained_like((8, 5, 3), cats)
    pruned = remove_units(network, [[0, 3, 7], None, [2]]).eval()
    inputs = _inputs(network, 32)

    spec = MLPSpec.from_dict(pruned.spec.to_dict())
    rebuilt = load(spec, pruned.state_dict()).eval()

    assert spec == pruned.spec
    assert spec.hidden == (3, 5, 1)
    assert spec == network.spec.with_hidden([3, 5, 1])
    assert torch.equal(rebuilt(*inputs), pruned(*inputs))


def test_keeping_every_neuron_gives_the_same_function() -> None:
    network = _trained_like((6, 4), (3,))
    inputs = _inputs(network, 16)
    pruned = remove_units(network, [None, list(range(4))]).eval()
    assert pruned.spec == network.spec
    assert torch.equal(pruned(*inputs), network(*inputs))


@pytest.mark.parametrize(
    "keep, fragment",
    [
        ([[], None], "empty"),
        ([None, [0, 4]], r"\[0, 4\)"),
        ([[-1, 2], None], r"\[0, 6\)"),
        ([[1, 1, 2], None], "distinct"),
        ([None], "one entry per prunable group"),
        ([None, None, None], "one entry per prunable group"),
    ],
)
def test_bad_keep_indices_are_a_clear_error(keep: list[list[int] | None], fragment: str) -> None:
    network = _trained_like((6, 4))
    with pytest.raises(TabslimInputError, match=fragment):
        remove_units(network, keep)


@pytest.mark.parametrize("width", [1, 5, 10, 33])
@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5, 0.9, 1.0])
def test_keep_top_keeps_the_highest_scores(width: int, ratio: float) -> None:
    generator = torch.Generator().manual_seed(width)
    scores = torch.randn(width, generator=generator)

    kept = keep_top(scores, ratio)

    # Halves round up (0.25 x 10 = 2.5 keeps 3), unlike Python's round().
    n_keep = max(1, int(ratio * width + 0.5))
    assert len(kept) == n_keep
    assert kept == sorted(kept)
    best = set(torch.argsort(scores, descending=True)[:n_keep].tolist())
    assert set(kept) == best


def test_keep_top_breaks_ties_towards_lower_indices() -> None:
    assert keep_top(torch.ones(6), 0.5) == [0, 1, 2]
    assert keep_top(torch.tensor([0.0, 2.0, 1.0, 2.0, 2.0]), 0.4) == [1, 3]


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.01, 2.0, math.nan])
def test_keep_top_rejects_ratios_outside_zero_to_one(ratio: float) -> None:
    with pytest.raises(TabslimInputError, match="keep ratio"):
        keep_top(torch.ones(4), ratio)
