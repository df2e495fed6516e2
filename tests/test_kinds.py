"""Every network kind through the one family interface: removal per group, ONNX, size, specs.

For every kind and every prunable group: silence the units to remove (zero what reads them),
remove them, and the outputs are unchanged; ONNX Runtime agrees with torch at two batch sizes;
the parameter count matches a closed form from the spec; the spec's JSON round trip rebuilds
the same outputs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import KINDS, MLPSpec, build, count_parameters, load, spec_from_dict
from lightning_modules.networks.accordion import AccordionSpec
from lightning_modules.networks.cnn1d import CNN1dSpec
from lightning_modules.networks.ft_transformer import FTTransformerSpec
from lightning_modules.networks.resnet import ResNetSpec
from pruning.removal import remove_units
from search.measure import export_onnx

INPUTS = {"d_num": 5, "d_out": 3, "cat_cardinalities": (4, 3)}
SPECS = {
    "mlp": MLPSpec(hidden=(12, 10), d_embedding=3, **INPUTS),
    "mlp_no_bn": MLPSpec(hidden=(9, 7), batch_norm=False, activation="gelu", **INPUTS),
    "resnet": ResNetSpec(d_main=10, hidden=(12, 8), d_embedding=3, **INPUTS),
    "ft_reglu": FTTransformerSpec(d_token=12, heads=(3, 2), d_head=4, ffn_hidden=(10, 6), **INPUTS),
    "ft_gelu": FTTransformerSpec(
        d_token=8, heads=(2,), d_head=4, ffn_hidden=(9,), ffn_activation="gelu", **INPUTS
    ),
    "ft_categorical_only": FTTransformerSpec(
        d_num=0, d_out=1, cat_cardinalities=(5,), d_token=6, heads=(2,), d_head=3, ffn_hidden=(4,)
    ),
    "cnn1d": CNN1dSpec(expansion=6, length=8, skip=(5, 4), middle=(7, 3), d_embedding=3, **INPUTS),
    "accordion": AccordionSpec(
        d_num=5,
        d_out=5,
        cat_cardinalities=(4, 3),
        encoder=(8, 4, 6),
        bottleneck=3,
        decoder=(6, 4, 8),
        d_embedding=3,
    ),  # fmt: skip
}
GROUPS = [(name, group) for name, spec in SPECS.items() for group in range(len(spec.group_sizes()))]


def _randomised(spec: object, seed: int = 0) -> nn.Module:
    """A network in eval mode whose norms are not at their identity initialisation.

    BatchNorm statistics are those of random rows, so that signals keep their scale through
    every block (with made-up statistics a deep 1D-CNN's output is nearly constant, and any
    removal would "preserve" it); scales are positive and shifts small, so no ReLU is dead.
    """
    network = build(spec, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
        for norm in norms:
            norm.momentum = None  # a cumulative average over the batches below
        network.train()
        for batch in range(4):
            network(*_inputs(spec, rows=64, seed=100 + batch))
    return network.eval()


def _inputs(spec: object, rows: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    return build(spec).example_inputs(rows)


def _half(size: int, seed: int) -> list[int]:
    """A seeded subset of about half the units, at least one."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[: max(1, size // 2)])


def _silence(network: nn.Module, group_index: int, kept: list[int]) -> None:
    """Zero what reads the units outside `kept`: their outputs then reach nothing."""
    group = network.prunable_groups()[group_index]
    removed = sorted(set(range(group.size)) - set(kept))
    state = network.state_dict()
    with torch.no_grad():
        for piece in group.slices_of("consumer"):
            positions = piece.index[removed].flatten()
            state[piece.key].index_fill_(piece.dim, positions, 0.0)


def _is_token_width(name: str, group_index: int) -> bool:
    spec = SPECS[name]
    return spec.kind == "ft_transformer" and spec.group_names()[group_index] == "token"


@pytest.mark.parametrize(("name", "group_index"), GROUPS)
def test_removing_silenced_units_leaves_the_outputs_unchanged(name: str, group_index: int) -> None:
    spec = SPECS[name]
    network = _randomised(spec)
    size = spec.group_sizes()[group_index]
    kept = _half(size, seed=group_index)
    untouched = copy.deepcopy(network)
    if _is_token_width(name, group_index):
        reference = _with_layer_norms_over(network, kept)
    else:
        _silence(network, group_index, kept)
        reference = network
    keep: list[list[int] | None] = [None] * len(spec.group_sizes())
    keep[group_index] = kept
    pruned = remove_units(network, keep)
    inputs = _inputs(spec)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), reference(*inputs), atol=1e-5, rtol=1e-5)
        # The removed units did matter: without silencing them the outputs change.
        assert (pruned(*inputs) - untouched(*inputs)).abs().max() > 1e-3
    expected = list(spec.group_sizes())
    expected[group_index] = len(kept)
    assert list(pruned.spec.group_sizes()) == expected
    assert count_parameters(pruned) < count_parameters(network)


@pytest.mark.parametrize("name", [n for n in SPECS if SPECS[n].kind != "ft_transformer"])
def test_removing_from_every_group_at_once_is_exact(name: str) -> None:
    spec = SPECS[name]
    network = _randomised(spec, seed=3)
    keep = [_half(size, seed=i + 10) for i, size in enumerate(spec.group_sizes())]
    untouched = copy.deepcopy(network)
    for group_index, kept in enumerate(keep):
        _silence(network, group_index, kept)
    pruned = remove_units(network, keep)
    inputs = _inputs(spec, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), network(*inputs), atol=1e-5, rtol=1e-5)
        assert (pruned(*inputs) - untouched(*inputs)).abs().max() > 1e-3
    assert pruned.spec.group_sizes() == tuple(len(k) for k in keep)


def test_removal_never_changes_its_input() -> None:
    network = _randomised(SPECS["ft_reglu"])
    before = {k: v.clone() for k, v in network.state_dict().items()}
    remove_units(network, [[0], [1, 2], [1], None, [0, 5]])
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())


class _MaskedLayerNorm(nn.Module):
    """LayerNorm over the kept channels only; the others come out zero."""

    def __init__(self, norm: nn.LayerNorm, kept: torch.Tensor) -> None:
        super().__init__()
        self.norm, self.kept = norm, kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        weight, bias = self.norm.weight[self.kept], self.norm.bias[self.kept]
        out[..., self.kept] = F.layer_norm(
            x[..., self.kept], (len(self.kept),), weight, bias, self.norm.eps
        )
        return out


def _with_layer_norms_over(network: nn.Module, kept: list[int]) -> nn.Module:
    """A copy whose LayerNorms normalise only the kept token channels.

    Every read of the token stream goes through a LayerNorm, so in this copy the removed
    channels reach nothing: what token-width removal must reproduce exactly.
    """
    masked = copy.deepcopy(network)
    index = torch.tensor(kept)
    for module in list(masked.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(module, child_name, _MaskedLayerNorm(child, index))
    return masked.eval()


@pytest.mark.parametrize("name", list(SPECS))
def test_onnx_runtime_agrees_with_torch_at_two_batch_sizes(name: str, tmp_path: Path) -> None:
    network = _randomised(SPECS[name])
    path = export_onnx(network, tmp_path / "network.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for rows in (1, 33):
        inputs = _inputs(SPECS[name], rows=rows)
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
        (output,) = session.run(None, feed)
        with torch.no_grad():
            expected = network(*inputs).numpy()
        np.testing.assert_allclose(output, expected, atol=1e-4, rtol=1e-4)
        assert output.shape == (rows, SPECS[name].d_out)


@pytest.mark.parametrize("name", list(SPECS))
def test_parameter_count_matches_the_closed_form(name: str) -> None:
    spec = SPECS[name]
    closed_form = KINDS[spec.kind].closed_form_parameters
    assert count_parameters(build(spec)) == closed_form(spec)
    smaller = spec.with_group_sizes([max(1, s // 3) for s in spec.group_sizes()])
    assert count_parameters(build(smaller)) == closed_form(smaller)


@pytest.mark.parametrize("name", list(SPECS))
def test_the_spec_round_trip_rebuilds_the_same_outputs(name: str) -> None:
    spec = SPECS[name]
    network = _randomised(spec)
    again = spec_from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and type(again) is type(spec)
    rebuilt = load(again, network.state_dict()).eval()
    inputs = _inputs(spec)
    with torch.no_grad():
        assert torch.equal(rebuilt(*inputs), network(*inputs))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            lambda: FTTransformerSpec(d_token=8, heads=(2, 2), d_head=4, ffn_hidden=(4,), **INPUTS),
            "one head count and one ffn width per block",
        ),
        (
            lambda: FTTransformerSpec(d_token=8, heads=(0,), d_head=4, ffn_hidden=(4,), **INPUTS),
            "every heads must be at least 1",
        ),
        (lambda: ResNetSpec(d_main=0, hidden=(4,), **INPUTS), "every d_main must be at least 1"),
        (
            lambda: CNN1dSpec(expansion=4, length=2, skip=(3,), middle=(3,), **INPUTS),
            "length must be at least 4",
        ),
        (lambda: spec_from_dict({"kind": "transformer"}), "model.kind must be one of"),
        (
            lambda: spec_from_dict(
                {"kind": "resnet", "d_num": 1, "d_out": 1, "d_main": 2, "hidden": [2], "blocks": 3}
            ),
            "unknown resnet network spec keys",
        ),
    ],  # fmt: skip
)
def test_a_bad_spec_is_one_clear_error(spec: object, message: str) -> None:
    with pytest.raises(TabslimInputError, match=message):
        spec()  # type: ignore[operator]


def test_a_plan_for_another_kind_names_the_groups() -> None:
    network = build(SPECS["resnet"])
    with pytest.raises(
        TabslimInputError, match=r"3: \['block0.hidden', 'block1.hidden', 'residual'\]"
    ):
        remove_units(network, [None, None])
    with pytest.raises(TabslimInputError, match="group residual empty"):
        remove_units(network, [None, None, []])


def _calibration(spec: object, rows: int = 32) -> dict[str, torch.Tensor]:
    inputs = _inputs(spec, rows=rows, seed=7)
    x_cat = inputs[1] if len(inputs) > 1 else torch.zeros(rows, 0, dtype=torch.long)
    generator = torch.Generator().manual_seed(8)
    if spec.d_out == 1:
        y = torch.randn(rows, 1, generator=generator)
    else:
        y = torch.randint(0, spec.d_out, (rows,), generator=generator)
    return {"x_num": inputs[0], "x_cat": x_cat, "y": y}


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize(
    "criterion", ["l1", "l2", "bn_scale", "activation_mean", "apoz", "taylor", "random"]
)
def test_every_criterion_scores_every_unit_of_every_group(name: str, criterion: str) -> None:
    from pruning.criteria import layer_scores

    spec = SPECS[name]
    network = _randomised(spec)
    has_batch_norm = spec.kind == "cnn1d" or getattr(spec, "batch_norm", False) is True
    if criterion == "bn_scale" and not has_batch_norm:
        with pytest.raises(TabslimInputError, match="'bn_scale' needs BatchNorm"):
            layer_scores(network, criterion, calibration=_calibration(spec))
        return
    scores = layer_scores(network, criterion, calibration=_calibration(spec))
    assert [len(s) for s in scores] == list(spec.group_sizes())
    assert all(torch.isfinite(s).all() for s in scores)


@pytest.mark.parametrize(("name", "group_index"), GROUPS)
def test_taylor_scores_a_unit_that_nothing_reads_as_zero(name: str, group_index: int) -> None:
    from pruning.criteria import layer_scores

    if _is_token_width(name, group_index):
        pytest.skip("LayerNorm mixes token channels: a silenced channel still moves the others")
    spec = SPECS[name]
    network = _randomised(spec)
    size = spec.group_sizes()[group_index]
    _silence(network, group_index, kept=list(range(1, size)))  # unit 0 reaches nothing
    scores = layer_scores(network, "taylor", calibration=_calibration(spec))[group_index]
    assert scores[0] == 0.0
    if size > 1:
        assert scores[1:].max() > 0.0


SMALL_KINDS = {
    "resnet": ResNetSpec(d_main=8, hidden=(10,), d_embedding=3, d_num=1, d_out=2),
    "ft_transformer": FTTransformerSpec(d_token=8, heads=(2,), d_head=4, ffn_hidden=(6,),
                                        d_num=1, d_out=2),
    "cnn1d": CNN1dSpec(expansion=4, length=8, skip=(4,), middle=(4,), d_embedding=3, d_num=1,
                       d_out=2),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(SMALL_KINDS))
def test_target_perturbation_and_the_adaptive_schedule_prune_every_kind(
    kind: str, small_data: object, one_thread: None
) -> None:
    import dataclasses

    from lightning_modules.training import FitSettings
    from pruning.plan import PruningPlan, apply_plan

    spec = dataclasses.replace(SMALL_KINDS[kind], **small_data.network_inputs())  # type: ignore[attr-defined]
    network = build(spec, seed=0)
    settings = FitSettings(max_epochs=1, lr=0.01, seed=0, accelerator="cpu")
    n_groups = len(spec.group_sizes())
    plan = PruningPlan(keep_ratios=(0.5,) * n_groups, order=tuple(range(n_groups)),
                       criterion="target_perturbation", schedule="adaptive", fine_tune_epochs=0,
                       step_epochs=1)  # fmt: skip
    result = apply_plan(network, plan, data=small_data, fit_settings=settings)  # type: ignore[arg-type]
    assert result.network.spec.kind == kind
    assert len(result.details["kept"]) == n_groups
    assert all(1 <= k <= w for k, w in zip(result.details["kept"], spec.group_sizes(), strict=True))
    assert result.details["steps_accepted"] + result.details["steps_rolled_back"] >= 1
