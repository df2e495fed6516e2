from __future__ import annotations

import json

import pytest
import torch

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLPSpec, build, count_parameters, load


@pytest.mark.parametrize("hidden", [(1,), (16, 8), (64, 32, 16, 8)])
@pytest.mark.parametrize("cats", [(), (5, 3)])
def test_spec_round_trips_through_json(hidden: tuple[int, ...], cats: tuple[int, ...]) -> None:
    spec = MLPSpec(d_num=7, d_out=3, hidden=hidden, cat_cardinalities=cats, dropout=0.2)
    again = MLPSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize("hidden", [(4,), (16, 8), (32, 16, 8)])
def test_parameter_count_matches_hand_count(hidden: tuple[int, ...]) -> None:
    spec = MLPSpec(d_num=10, d_out=3, hidden=hidden, cat_cardinalities=(6,), d_embedding=4)
    widths = [10 + 4, *hidden]
    linear = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    batch_norm = 2 * sum(hidden)
    expected = 6 * 4 + linear + batch_norm + hidden[-1] * 3 + 3
    assert count_parameters(build(spec)) == expected


def test_every_hidden_width_is_the_specs() -> None:
    spec = MLPSpec(d_num=5, d_out=2, hidden=(13, 7, 3))
    network = build(spec)
    assert [block.linear.out_features for block in network.blocks] == [13, 7, 3]
    assert network.head.in_features == 3


def test_spec_plus_state_dict_rebuilds_the_same_function() -> None:
    spec = MLPSpec(d_num=4, d_out=2, hidden=(8, 8), cat_cardinalities=(3, 4))
    network = build(spec).eval()
    inputs = network.example_inputs(16)
    rebuilt = load(MLPSpec.from_dict(spec.to_dict()), network.state_dict()).eval()
    assert torch.equal(network(*inputs), rebuilt(*inputs))


@pytest.mark.parametrize("batch", [1, 33])
def test_forward_shapes(batch: int) -> None:
    with_cats = build(MLPSpec(d_num=4, d_out=5, hidden=(8,), cat_cardinalities=(3,))).eval()
    without = build(MLPSpec(d_num=4, d_out=1, hidden=(8,))).eval()
    assert with_cats(*with_cats.example_inputs(batch)).shape == (batch, 5)
    assert len(without.example_inputs(batch)) == 1
    assert without(*without.example_inputs(batch)).shape == (batch, 1)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"hidden": (8, 0)}, "hidden width"),
        ({"activation": "tanhh"}, "activation"),
        ({"dropout": 1.5}, "dropout"),
        ({"d_out": 0}, "d_out"),
    ],
)
def test_bad_spec_is_a_clear_error(fields: dict[str, object], fragment: str) -> None:
    kwargs: dict[str, object] = {"d_num": 4, "d_out": 2, "hidden": (8,)} | fields
    with pytest.raises(TabslimInputError, match=fragment):
        MLPSpec(**kwargs)  # type: ignore[arg-type]


def test_unknown_spec_key_is_rejected() -> None:
    data = MLPSpec(d_num=4, d_out=2, hidden=(8,)).to_dict() | {"width_multiplier": 2}
    with pytest.raises(TabslimInputError, match="width_multiplier"):
        MLPSpec.from_dict(data)


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    spec = MLPSpec(d_num=4, d_out=2, hidden=(8,), cat_cardinalities=(3,))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build(spec, seed=7), build(spec, seed=7)
    assert torch.rand(1) == expected_next
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(build(spec, seed=8).head.weight, a.head.weight)
