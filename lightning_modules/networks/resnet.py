"""The ResNet kind (rtdl-style, Gorishniy et al. 2021): an input projection, residual blocks of
BatchNorm -> Linear -> activation -> Dropout -> Linear -> Dropout added to the stream, and a
BatchNorm -> ReLU -> Linear head.

Prunable groups: each block's hidden units (`block<i>.hidden`), and the residual width
(`residual`), one group coupled across the projection, every block and the head. BatchNorm is
per channel, so removing a residual channel that nothing reads leaves the outputs unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks.base import (
    ACTIVATIONS,
    ConcatenatedInputs,
    Gate,
    PrunableGroup,
    Slice,
    check_widths,
    embed_inputs,
    example_inputs_for,
    make_embeddings,
    units,
)

KIND = "resnet"


@dataclass(frozen=True)
class ResNetSpec(ConcatenatedInputs):
    """Args:
    d_main: the residual stream's width.
    hidden: each block's hidden width, first to last.
    """

    d_num: int
    d_out: int
    d_main: int
    hidden: tuple[int, ...]
    cat_cardinalities: tuple[int, ...] = ()
    d_embedding: int = 8
    dropout: float = 0.1
    activation: str = "relu"
    kind: str = field(default=KIND)

    def __post_init__(self) -> None:
        self._as_tuples("hidden", "cat_cardinalities")
        self._check_common(KIND, self.activation)
        check_widths(KIND, d_main=self.d_main, hidden=self.hidden, d_embedding=self.d_embedding)

    def group_names(self) -> tuple[str, ...]:
        return (*(f"block{i}.hidden" for i in range(len(self.hidden))), "residual")

    def group_sizes(self) -> tuple[int, ...]:
        return (*self.hidden, self.d_main)

    def with_group_sizes(self, sizes: Sequence[int]) -> ResNetSpec:
        *hidden, d_main = (int(s) for s in sizes)
        if len(hidden) != len(self.hidden):
            raise TabslimInputError(
                f"a resnet of {len(self.hidden)} blocks has {len(self.hidden) + 1} groups, "
                f"but got {len(sizes)} sizes"
            )
        return dataclasses.replace(self, hidden=tuple(hidden), d_main=d_main)


class Options(BaseModel):
    """The `model:` keys of a ResNet baseline in a config."""

    model_config = ConfigDict(extra="forbid", strict=True)
    d_main: int = Field(default=256, ge=1)
    hidden: list[int] = Field(default_factory=lambda: [512, 512], min_length=1)
    d_embedding: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    activation: str = "relu"


def baseline(options: Options, **inputs: Any) -> ResNetSpec:
    return ResNetSpec(
        d_main=options.d_main,
        hidden=tuple(options.hidden),
        d_embedding=options.d_embedding,
        dropout=options.dropout,
        activation=options.activation,
        **inputs,
    )


class ResidualBlock(nn.Module):
    """(B, d_main) -> (B, d_main): x + Dropout(Linear(Dropout(activation(Linear(BatchNorm(x))))))"""

    def __init__(self, *, d_main: int, d_hidden: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d_main)
        self.linear1 = nn.Linear(d_main, d_hidden)
        self.activation = ACTIVATIONS[activation]()
        self.dropout1 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hidden, d_main)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout1(self.activation(self.linear1(self.norm(x))))
        return x + self.dropout2(self.linear2(h))


class ResNet(nn.Module):
    """The rtdl ResNet for tabular data.

    ```
    x_num (B, d_num), x_cat (B, n_cat) -> embed, concatenate -> (B, d_in)
      -> Linear -> (B, d_main)
      -> [x + Dropout(Linear(Dropout(activation(Linear(BatchNorm(x))))))] per block,
         (B, d_main) -> (B, hidden[i]) -> (B, d_main)
      -> BatchNorm -> ReLU -> Linear -> (B, d_out)
    ```
    Prunable groups: each block's hidden width, and `residual`, the stream's d_main channels,
    coupled across the projection, every block and the head.
    """

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embeddings = make_embeddings(spec.cat_cardinalities, spec.d_embedding)
        self.projection = nn.Linear(spec.d_in, spec.d_main)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                d_main=spec.d_main, d_hidden=h, activation=spec.activation, dropout=spec.dropout
            )
            for h in spec.hidden
        )
        # The stream as the head reads it: where the residual width's units are gated.
        self.stream = nn.Identity()
        self.head_norm = nn.BatchNorm1d(spec.d_main)
        self.head_activation = nn.ReLU()
        self.head = nn.Linear(spec.d_main, spec.d_out)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        x = self.projection(embed_inputs(self.embeddings, x_num, x_cat))
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_activation(self.head_norm(self.stream(x))))

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return example_inputs_for(self.spec, batch_size)

    def prunable_groups(self) -> list[PrunableGroup]:
        groups = []
        for i, width in enumerate(self.spec.hidden):
            rows, block = units(width), f"blocks.{i}"
            slices = (
                Slice(f"{block}.linear1.weight", 0, rows, "weight"),
                Slice(f"{block}.linear1.bias", 0, rows, "bias"),
                Slice(f"{block}.linear2.weight", 1, rows, "consumer"),
            )
            gate = Gate(f"{block}.activation", -1, rows)
            groups.append(PrunableGroup(f"block{i}.hidden", width, slices, gate))
        return [*groups, self._residual_group()]

    def _residual_group(self) -> PrunableGroup:
        rows = units(self.spec.d_main)
        slices = [
            Slice("projection.weight", 0, rows, "weight"),
            Slice("projection.bias", 0, rows, "bias"),
        ]
        norms = [f"blocks.{i}.norm" for i in range(len(self.spec.hidden))] + ["head_norm"]
        for norm in norms:
            slices += [
                Slice(f"{norm}.weight", 0, rows, "norm", batch_norm=True),
                Slice(f"{norm}.bias", 0, rows, "state"),
                Slice(f"{norm}.running_mean", 0, rows, "state"),
                Slice(f"{norm}.running_var", 0, rows, "state"),
            ]
        for i in range(len(self.spec.hidden)):
            slices += [
                Slice(f"blocks.{i}.linear1.weight", 1, rows, "consumer"),
                Slice(f"blocks.{i}.linear2.weight", 0, rows, "weight"),
                Slice(f"blocks.{i}.linear2.bias", 0, rows, "bias"),
            ]
        slices.append(Slice("head.weight", 1, rows, "consumer"))
        return PrunableGroup("residual", self.spec.d_main, tuple(slices), Gate("stream", -1, rows))


def closed_form_parameters(spec: ResNetSpec) -> int:
    d = spec.d_main
    blocks = sum(2 * d + (d + 1) * h + (h + 1) * d for h in spec.hidden)
    embeddings = sum(spec.cat_cardinalities) * spec.d_embedding
    return embeddings + (spec.d_in + 1) * d + blocks + 2 * d + (d + 1) * spec.d_out
