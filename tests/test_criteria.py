from __future__ import annotations

import copy
import math
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLP, MLPSpec, build
from pruning.criteria import CRITERIA, calibration_batch, check_criterion, layer_scores

# Every criterion that runs without another module's training loop.
LOCAL = [c for c in CRITERIA if c != "target_perturbation"]
DATA = ["activation_mean", "apoz", "taylor"]

# The tensors here are tiny: one torch thread (see conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


def _hand_network(activation: str = "relu") -> MLP:
    """3 inputs -> 4 -> 3 -> 2 with hand-set weights and BatchNorm that is ~identity in eval.

    Layer 0 copies x0, x1, x2 and -x0; layer 1 computes a0, a1 - a2 and -a3 of layer 0's
    outputs a. BatchNorm has running mean 0, variance 1, gamma 1 and beta 0, so in eval mode it
    only divides by sqrt(1 + eps): signs and exact zeros survive, magnitudes change by ~5e-6.
    """
    network = build(MLPSpec(d_num=3, d_out=2, hidden=(4, 3), activation=activation), seed=0)
    with torch.no_grad():
        network.blocks[0].linear.weight.copy_(
            torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]])
        )
        network.blocks[1].linear.weight.copy_(
            torch.tensor([[1.0, 0, 0, 0], [0, 1, -1, 0], [0, 0, 0, -1]])
        )
        for block in network.blocks:
            block.linear.bias.zero_()
            block.norm.weight.fill_(1.0)
            block.norm.bias.zero_()
            block.norm.running_mean.zero_()
            block.norm.running_var.fill_(1.0)
    return network.eval()


def _hand_batch() -> dict[str, torch.Tensor]:
    x_num = torch.tensor([[1.0, -1, 2], [-2, 3, 0], [0.5, 0, -1], [3, 1, 1]])
    return {
        "x_num": x_num,
        "x_cat": torch.zeros(4, 0, dtype=torch.long),
        "y": torch.tensor([0, 1, 1, 0]),
    }


def _random_network(
    hidden: tuple[int, ...], *, d_out: int = 3, cats: tuple[int, ...] = (), activation: str = "relu"
) -> MLP:
    """A seeded network with BatchNorm running statistics moved off their defaults."""
    spec = MLPSpec(
        d_num=4, d_out=d_out, hidden=hidden, cat_cardinalities=cats, activation=activation
    )
    network = build(spec, seed=0)
    network.train()
    with torch.no_grad():
        for seed in range(3):
            batch = _random_batch(network, 32, seed=seed)
            network(batch["x_num"], batch["x_cat"])
    return network.eval()


def _random_batch(network: MLP, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    spec = network.spec
    columns = [torch.randint(0, c, (rows,), generator=generator) for c in spec.cat_cardinalities]
    if spec.d_out == 1:
        y = torch.randn(rows, 1, generator=generator)
    else:
        y = torch.randint(0, spec.d_out, (rows,), generator=generator)
    return {
        "x_num": 2 * torch.randn(rows, spec.d_num, generator=generator),
        "x_cat": torch.stack(columns, dim=1) if columns else torch.zeros(rows, 0, dtype=torch.long),
        "y": y,
    }


def _taylor_row_by_row(network: MLP, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """|mean over rows of a * d loss_row / d a|, one backward pass per row, on a copy."""
    reference = copy.deepcopy(network).eval()
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            output.retain_grad()
            captured[layer] = output

        return hook

    for layer, block in enumerate(reference.blocks):
        block.activation.register_forward_hook(capture(layer))
    totals = [torch.zeros(width) for width in network.spec.hidden]
    n_rows = len(batch["y"])
    for row in range(n_rows):
        output = reference(batch["x_num"][row : row + 1], batch["x_cat"][row : row + 1])
        y = batch["y"][row : row + 1]
        loss = F.mse_loss(output, y) if y.is_floating_point() else F.cross_entropy(output, y)
        reference.zero_grad()
        loss.backward()
        for layer, total in enumerate(totals):
            total += (captured[layer] * captured[layer].grad)[0]  # type: ignore[operator]
    return [(total / n_rows).abs() for total in totals]


def test_l1_and_l2_are_norms_of_incoming_weight_rows_without_bias() -> None:
    network = _hand_network()
    with torch.no_grad():
        network.blocks[0].linear.weight.copy_(
            torch.tensor([[1.0, -2, 0], [0, 0, 0], [3, 0, -4], [0.5, 0.5, 0.5]])
        )
        network.blocks[1].linear.weight.copy_(
            torch.tensor([[1.0, 1, 1, 1], [-2, 0, 0, 0], [0, 0, 0, 0.1]])
        )
        # A large bias would dominate both norms if it were counted.
        for block in network.blocks:
            block.linear.bias.fill_(10.0)

    l1 = layer_scores(network, "l1")
    l2 = layer_scores(network, "l2")

    assert torch.allclose(l1[0], torch.tensor([3.0, 0.0, 7.0, 1.5]))
    assert torch.allclose(l1[1], torch.tensor([4.0, 2.0, 0.1]))
    assert torch.allclose(l2[0], torch.tensor([math.sqrt(5), 0.0, 5.0, math.sqrt(0.75)]))
    assert torch.allclose(l2[1], torch.tensor([2.0, 2.0, 0.1]))


def test_bn_scale_is_the_absolute_batch_norm_gamma() -> None:
    network = _hand_network()
    with torch.no_grad():
        network.blocks[0].norm.weight.copy_(torch.tensor([0.5, -2.0, 0.0, 1.0]))
        network.blocks[1].norm.weight.copy_(torch.tensor([-1.0, 0.25, 3.0]))

    scores = layer_scores(network, "bn_scale")

    assert torch.equal(scores[0], torch.tensor([0.5, 2.0, 0.0, 1.0]))
    assert torch.equal(scores[1], torch.tensor([1.0, 0.25, 3.0]))


def test_bn_scale_without_batch_norm_is_a_clear_error() -> None:
    network = build(MLPSpec(d_num=3, d_out=2, hidden=(4,), batch_norm=False))
    with pytest.raises(TabslimInputError, match="batch_norm=False"):
        layer_scores(network, "bn_scale")


def test_activation_mean_is_the_mean_absolute_post_activation_output() -> None:
    # Layer 0 ReLU outputs by row: [1,0,2,0], [0,3,0,2], [0.5,0,0,0], [3,1,1,0].
    # Layer 1: a0 = [1,0,0.5,3], relu(a1 - a2) = [0,3,0,0], relu(-a3) = [0,0,0,0].
    scores = layer_scores(_hand_network(), "activation_mean", calibration=_hand_batch())
    assert torch.allclose(scores[0], torch.tensor([1.125, 1.0, 0.75, 0.5]), atol=1e-4)
    assert torch.allclose(scores[1], torch.tensor([1.125, 0.75, 0.0]), atol=1e-4)


def test_apoz_importance_is_one_minus_the_share_of_zero_outputs() -> None:
    # Zeros per neuron (see the activation test): layer 0 has 1, 2, 2, 3 of 4; layer 1 has
    # 1, 3, 4 of 4. Exact zeros survive the near-identity BatchNorm.
    scores = layer_scores(_hand_network(), "apoz", calibration=_hand_batch())
    assert torch.equal(scores[0], torch.tensor([0.75, 0.5, 0.5, 0.25]))
    assert torch.equal(scores[1], torch.tensor([0.75, 0.25, 0.0]))


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_apoz_counts_non_positive_outputs_for_smooth_activations(activation: str) -> None:
    # GELU and SiLU are negative exactly where ReLU is zero (and 0 at 0), so layer 0, whose
    # inputs are the same for every activation, has ReLU's APoZ; `== 0` would find ~no zeros.
    scores = layer_scores(_hand_network(activation), "apoz", calibration=_hand_batch())
    assert torch.equal(scores[0], torch.tensor([0.75, 0.5, 0.5, 0.25]))


@pytest.mark.parametrize("d_out", [3, 1], ids=["classification", "regression"])
@pytest.mark.parametrize("cats", [(), (5, 2)])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_taylor_matches_a_row_by_row_autograd_computation(
    d_out: int, cats: tuple[int, ...], activation: str
) -> None:
    network = _random_network((6, 5), d_out=d_out, cats=cats, activation=activation)
    batch = _random_batch(network, 24, seed=7)

    scores = layer_scores(network, "taylor", calibration=batch)

    expected = _taylor_row_by_row(network, batch)
    for got, want in zip(scores, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)
    assert any(bool((s > 0).any()) for s in scores)


def test_taylor_works_with_frozen_parameters() -> None:
    network = _random_network((6, 5))
    batch = _random_batch(network, 16)
    expected = layer_scores(network, "taylor", calibration=batch)
    assert [s.shape for s in expected] == [(6,), (5,)]
    assert all(bool((s > 0).any()) for s in expected)  # real gradients, not zeros
    network.requires_grad_(False)
    scores = layer_scores(network, "taylor", calibration=batch)
    assert all(torch.equal(a, b) for a, b in zip(scores, expected, strict=True))


def test_taylor_rejects_regression_targets_of_the_wrong_shape() -> None:
    network = _random_network((4,), d_out=1)
    batch = _random_batch(network, 8)
    batch["y"] = batch["y"].squeeze(1)
    with pytest.raises(TabslimInputError, match="shape"):
        layer_scores(network, "taylor", calibration=batch)


def test_random_scores_are_reproducible_by_seed_and_differ_across_seeds() -> None:
    network = _random_network((8, 4))
    first = layer_scores(network, "random", seed=3)
    again = layer_scores(build(network.spec, seed=99), "random", seed=3)
    other = layer_scores(network, "random", seed=4)
    assert [s.shape for s in first] == [(8,), (4,)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("hidden", [(1,), (7, 5), (16, 8, 4)])
@pytest.mark.parametrize("criterion", LOCAL)
def test_one_score_per_neuron_in_every_layer(hidden: tuple[int, ...], criterion: str) -> None:
    network = _random_network(hidden, cats=(3,))
    batch = _random_batch(network, 32)

    scores = layer_scores(network, criterion, calibration=batch)

    assert [s.shape for s in scores] == [(width,) for width in hidden]
    assert all(s.dtype == torch.float32 and s.device.type == "cpu" for s in scores)
    assert all(bool(torch.isfinite(s).all()) and not s.requires_grad for s in scores)


@pytest.mark.parametrize("criterion", LOCAL)
def test_scoring_leaves_the_network_unchanged(criterion: str) -> None:
    network = _random_network((6, 5), cats=(3,))
    # Mixed flags, as a caller might leave them: each must come back as it was.
    network.train()
    network.blocks[1].eval()
    flags = [module.training for module in network.modules()]
    before = {k: v.clone() for k, v in network.state_dict().items()}

    layer_scores(network, criterion, calibration=_random_batch(network, 32))

    after = network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [module.training for module in network.modules()] == flags
    assert all(p.grad is None for p in network.parameters())
    assert all(not module._forward_hooks for module in network.modules())


def test_unknown_criterion_is_a_clear_error() -> None:
    assert check_criterion("taylor") == "taylor"
    with pytest.raises(TabslimInputError, match=r"'l3'.*'l1', 'l2'"):
        check_criterion("l3")
    with pytest.raises(TabslimInputError, match="l3"):
        layer_scores(_hand_network(), "l3")


@pytest.mark.parametrize("criterion", DATA)
def test_data_criteria_need_a_calibration_batch(criterion: str) -> None:
    with pytest.raises(TabslimInputError, match="calibration"):
        layer_scores(_hand_network(), criterion)


def test_taylor_needs_targets() -> None:
    batch = _hand_batch()
    del batch["y"]
    with pytest.raises(TabslimInputError, match="'y'"):
        layer_scores(_hand_network(), "taylor", calibration=batch)


def test_target_perturbation_is_dispatched_with_seed_and_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stand-in for the module that trains perturbed copies: this tests only the dispatch.
    calls: list[dict[str, Any]] = []

    def perturbation_scores(network: MLP, *, seed: int = 0, **kwargs: Any) -> list[torch.Tensor]:
        calls.append({"network": network, "seed": seed, **kwargs})
        return [torch.arange(float(width)) for width in network.spec.hidden]

    stand_in = types.ModuleType("pruning.target_perturbation")
    stand_in.perturbation_scores = perturbation_scores  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pruning.target_perturbation", stand_in)
    network = _hand_network()

    scores = layer_scores(network, "target_perturbation", seed=5, data="d", fit_settings="c")

    assert calls == [{"network": network, "seed": 5, "data": "d", "fit_settings": "c"}]
    assert [s.tolist() for s in scores] == [[0, 1, 2, 3], [0, 1, 2]]


def test_calibration_batch_is_a_seeded_sample_of_training_rows(
    small_data: TabularDataModule,
) -> None:
    data = small_data
    train = data.tensors["train"]

    batch = calibration_batch(data, size=50, seed=1)

    assert set(batch) == set(train)
    assert all(len(tensor) == 50 for tensor in batch.values())
    # Every sampled row is a training row, with its own target.
    for x_num, x_cat, y in zip(batch["x_num"], batch["x_cat"], batch["y"], strict=True):
        match = (train["x_num"] == x_num).all(dim=1) & (train["x_cat"] == x_cat).all(dim=1)
        assert bool(match.any())
        assert bool((train["y"][match] == y).all())
    again = calibration_batch(data, size=50, seed=1)
    other = calibration_batch(data, size=50, seed=2)
    assert torch.equal(again["x_num"], batch["x_num"])
    assert not torch.equal(other["x_num"], batch["x_num"])
    # A size above the training rows gives all of them.
    everything = calibration_batch(data, size=10_000)
    assert len(everything["y"]) == len(train["y"])
    with pytest.raises(TabslimInputError, match="size=0"):
        calibration_batch(data, size=0)

    network = build(MLPSpec(hidden=(8, 4), **data.network_inputs()), seed=0).eval()
    for criterion in DATA:
        scores = layer_scores(network, criterion, calibration=batch)
        assert [s.shape for s in scores] == [(8,), (4,)]
