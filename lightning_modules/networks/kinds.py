"""Every network kind behind one entry point: specs from data, builders, loading.

A network is rebuilt exactly from `spec + state_dict`: the spec is plain data (ints, lists,
a few options), so a pruned or shrunken shape can be logged, compared and retrained without
pickling modules. `KINDS` maps `model.kind` to its family; the interface a kind provides is in
`lightning_modules.networks.base`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import accordion, cnn1d, ft_transformer, mlp, resnet


@dataclass(frozen=True)
class Family:
    """One network kind: its spec and module classes, config options and closed-form size."""

    spec: type[Any]
    network: Callable[[Any], nn.Module]
    options: type[BaseModel]
    baseline: Callable[..., Any]
    closed_form_parameters: Callable[[Any], int]


KINDS: dict[str, Family] = {
    module.KIND: Family(
        spec, network, module.Options, module.baseline, module.closed_form_parameters
    )
    for module, spec, network in (
        (mlp, mlp.MLPSpec, mlp.MLP),
        (resnet, resnet.ResNetSpec, resnet.ResNet),
        (ft_transformer, ft_transformer.FTTransformerSpec, ft_transformer.FTTransformer),
        (cnn1d, cnn1d.CNN1dSpec, cnn1d.CNN1d),
        (accordion, accordion.AccordionSpec, accordion.Accordion),
    )
}


def family(kind: str) -> Family:
    if kind not in KINDS:
        raise TabslimInputError(f"model.kind must be one of {sorted(KINDS)}, but got {kind!r}")
    return KINDS[kind]


def spec_from_dict(data: dict[str, Any]) -> Any:
    """The spec `spec.to_dict()` wrote, of whichever kind it names (mlp when it names none)."""
    kind = str(data.get("kind", mlp.KIND))
    return family(kind).spec.from_dict(data)


def kind_baseline_spec(kind: str, options: BaseModel, **inputs: Any) -> Any:
    """The configured baseline of `kind`, with the inputs and outputs of the data.

    Args:
        inputs: d_num, cat_cardinalities and d_out, as `TabularDataModule.network_inputs()`.
    """
    return family(kind).baseline(options, **inputs)


def build(spec: Any, *, seed: int | None = None) -> Any:
    """A freshly initialised network of the given shape.

    Args:
        seed: makes the initial weights reproducible without touching the global RNG.
    """
    make = family(spec.kind).network
    if seed is None:
        return make(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make(spec)


def load(spec: Any, state_dict: dict[str, torch.Tensor]) -> Any:
    """The network `spec` describes, with trained weights; shapes must match exactly."""
    network = build(spec)
    network.load_state_dict(state_dict, strict=True)
    return network
