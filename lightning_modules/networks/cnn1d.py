"""The 1D-CNN kind, after the Mechanisms-of-Action 2nd-place network: BatchNorm -> Dropout ->
a dense expansion -> CELU, reshaped into channels (B, C, L); conv blocks, each a conv whose
output is kept as a skip, two more convs, and a multiplicative skip (x * skip); then max
pooling, a flatten, and a BatchNorm -> Dropout -> Linear head.

Prunable groups: the dense expansion in whole channels (`expansion`), and per block the
channels that the multiplicative skip joins (`block<i>.skip`: the first and the last conv's
outputs share one mask) and the middle conv's channels (`block<i>.middle`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks.base import (
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

KIND = "cnn1d"
_KERNEL_FIRST, _KERNEL = 5, 3


def pooled_length(length: int) -> int:
    """The signal length after the first block's AvgPool(2) and the final MaxPool(4, 2, 1)."""
    return (length // 2 + 2 * 1 - 4) // 2 + 1


@dataclass(frozen=True)
class CNN1dSpec(ConcatenatedInputs):
    """Args:
    expansion: channels of the dense expansion; it has expansion x length outputs.
    length: the signal length each channel is reshaped to (at least 4).
    skip: per block, the channels the multiplicative skip joins.
    middle: per block, the middle conv's channels.
    """

    d_num: int
    d_out: int
    expansion: int
    length: int
    skip: tuple[int, ...]
    middle: tuple[int, ...]
    cat_cardinalities: tuple[int, ...] = ()
    d_embedding: int = 8
    dropout: float = 0.1
    kind: str = field(default=KIND)

    def __post_init__(self) -> None:
        self._as_tuples("skip", "middle", "cat_cardinalities")
        self._check_common(KIND)
        check_widths(
            KIND,
            expansion=self.expansion,
            skip=self.skip,
            middle=self.middle,
            d_embedding=self.d_embedding,
        )
        if self.length < 4:
            raise TabslimInputError(f"cnn1d length must be at least 4, but got {self.length}")
        if len(self.skip) != len(self.middle):
            raise TabslimInputError(
                f"cnn1d needs one skip and one middle width per block, but got "
                f"skip={list(self.skip)} and middle={list(self.middle)}"
            )

    def group_names(self) -> tuple[str, ...]:
        blocks = [(f"block{i}.skip", f"block{i}.middle") for i in range(len(self.skip))]
        return ("expansion", *(name for pair in blocks for name in pair))

    def group_sizes(self) -> tuple[int, ...]:
        blocks = zip(self.skip, self.middle, strict=True)
        return (self.expansion, *(size for pair in blocks for size in pair))

    def with_group_sizes(self, sizes: Sequence[int]) -> CNN1dSpec:
        sizes = [int(s) for s in sizes]
        if len(sizes) != 1 + 2 * len(self.skip):
            raise TabslimInputError(
                f"a cnn1d of {len(self.skip)} blocks has {1 + 2 * len(self.skip)} groups, "
                f"but got {len(sizes)} sizes"
            )
        return dataclasses.replace(
            self, expansion=sizes[0], skip=tuple(sizes[1::2]), middle=tuple(sizes[2::2])
        )


class Options(BaseModel):
    """The `model:` keys of a 1D-CNN baseline in a config."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # The dense layer's width; it must be a whole number of `length`-long channels.
    dense: int = Field(default=4096, ge=4)
    length: int = Field(default=16, ge=4)
    skip: list[int] = Field(default_factory=lambda: [256], min_length=1)
    middle: list[int] = Field(default_factory=lambda: [256], min_length=1)
    d_embedding: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> Options:
        if self.dense % self.length:
            raise ValueError(
                f"model.dense must be a whole number of channels of model.length, but got "
                f"dense={self.dense} and length={self.length} ({self.dense / self.length:.4g} "
                "channels)"
            )
        if len(self.skip) != len(self.middle):
            raise ValueError(
                f"model.skip and model.middle need one width per block each, but got "
                f"{self.skip} and {self.middle}"
            )
        return self


def baseline(options: Options, **inputs: Any) -> CNN1dSpec:
    return CNN1dSpec(
        expansion=options.dense // options.length,
        length=options.length,
        skip=tuple(options.skip),
        middle=tuple(options.middle),
        d_embedding=options.d_embedding,
        dropout=options.dropout,
        **inputs,
    )


class ConvUnit(nn.Module):
    """BatchNorm -> Dropout -> Conv1d -> ReLU over (B, C, L)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(c_in)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(self.dropout(self.norm(x))))


class SkipBlock(nn.Module):
    """(B, c_in, L) -> (B, skip, L'): first conv s, then s' = convs(s), out = s' * s."""

    def __init__(self, c_in: int, skip: int, middle: int, *, first: bool, dropout: float) -> None:
        super().__init__()
        self.first = ConvUnit(c_in, skip, _KERNEL_FIRST if first else _KERNEL, dropout)
        # The MoA network halves the signal once, after its first conv.
        self.pool: nn.Module = nn.AvgPool1d(2) if first else nn.Identity()
        self.middle = ConvUnit(skip, middle, _KERNEL, dropout)
        self.last = ConvUnit(middle, skip, _KERNEL, dropout)
        self.joined = nn.Identity()  # (B, skip, L'): where the skip channels are gated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool(self.first(x))
        return self.joined(self.last(self.middle(s)) * s)


class CNN1d(nn.Module):
    """The MoA-style 1D CNN: a dense layer reshaped into channels, then convolutions.

    ```
    x_num (B, d_num), x_cat (B, n_cat) -> embed, concatenate -> (B, d_in)
      -> BatchNorm -> Dropout -> Linear -> CELU -> (B, expansion * length)
      -> reshape (B, expansion, length)
      -> SkipBlock per block: (B, c_in, L) -> (B, skip[i], L'), out = convs(s) * s
      -> MaxPool -> flatten (B, skip[-1] * L'') -> BatchNorm -> Dropout -> Linear -> (B, d_out)
    ```
    Prunable groups: `expansion` (whole channels of the dense layer), and per block `skip` and
    `middle`.
    """

    def __init__(self, spec: CNN1dSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embeddings = make_embeddings(spec.cat_cardinalities, spec.d_embedding)
        self.input_norm = nn.BatchNorm1d(spec.d_in)
        self.input_dropout = nn.Dropout(spec.dropout)
        self.dense = nn.Linear(spec.d_in, spec.expansion * spec.length)
        self.dense_activation = nn.CELU()
        self.expanded = nn.Identity()  # (B, expansion, length): where channels are gated
        channels = [spec.expansion, *spec.skip]
        self.blocks = nn.ModuleList(
            SkipBlock(channels[i], s, m, first=i == 0, dropout=spec.dropout)
            for i, (s, m) in enumerate(zip(spec.skip, spec.middle, strict=True))
        )
        self.pool = nn.MaxPool1d(kernel_size=4, stride=2, padding=1)
        flat = spec.skip[-1] * pooled_length(spec.length)
        self.head_norm = nn.BatchNorm1d(flat)
        self.head_dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(flat, spec.d_out)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        x = self.input_dropout(self.input_norm(embed_inputs(self.embeddings, x_num, x_cat)))
        x = self.dense_activation(self.dense(x))
        x = self.expanded(x.view(x.shape[0], self.spec.expansion, self.spec.length))
        for block in self.blocks:
            x = block(x)
        x = self.pool(x).flatten(1)  # (B, skip * L''), channel-major
        return self.head(self.head_dropout(self.head_norm(x)))

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return example_inputs_for(self.spec, batch_size)

    def prunable_groups(self) -> list[PrunableGroup]:
        spec = self.spec
        channels = units(spec.expansion)
        n_blocks = len(spec.skip)
        expansion = (
            Slice("dense.weight", 0, units(spec.expansion, spec.length), "weight"),
            Slice("dense.bias", 0, units(spec.expansion, spec.length), "bias"),
            *_norm_slices("blocks.0.first.norm", channels),
            Slice("blocks.0.first.conv.weight", 1, channels, "consumer"),
        )
        groups = [
            PrunableGroup("expansion", spec.expansion, expansion, Gate("expanded", 1, channels))
        ]
        for i in range(n_blocks):
            block = f"blocks.{i}"
            skip, middle = units(spec.skip[i]), units(spec.middle[i])
            if i + 1 < n_blocks:
                readers: tuple[Slice, ...] = (
                    *_norm_slices(f"blocks.{i + 1}.first.norm", skip),
                    Slice(f"blocks.{i + 1}.first.conv.weight", 1, skip, "consumer"),
                )
            else:
                flat = units(spec.skip[i], pooled_length(spec.length))
                readers = (
                    *_norm_slices("head_norm", flat),
                    Slice("head.weight", 1, flat, "consumer"),
                )
            joined = (
                *_conv_out_slices(f"{block}.first.conv", skip),
                *_norm_slices(f"{block}.middle.norm", skip),
                Slice(f"{block}.middle.conv.weight", 1, skip, "consumer"),
                *_conv_out_slices(f"{block}.last.conv", skip),
                *readers,
            )
            groups.append(
                PrunableGroup(
                    f"block{i}.skip", spec.skip[i], joined, Gate(f"{block}.joined", 1, skip)
                )
            )
            inner = (
                *_conv_out_slices(f"{block}.middle.conv", middle),
                *_norm_slices(f"{block}.last.norm", middle),
                Slice(f"{block}.last.conv.weight", 1, middle, "consumer"),
            )
            gate = Gate(f"{block}.middle.activation", 1, middle)
            groups.append(PrunableGroup(f"block{i}.middle", spec.middle[i], inner, gate))
        return groups


def _conv_out_slices(conv: str, index: torch.Tensor) -> tuple[Slice, ...]:
    return (Slice(f"{conv}.weight", 0, index, "weight"), Slice(f"{conv}.bias", 0, index, "bias"))


def _norm_slices(norm: str, index: torch.Tensor) -> tuple[Slice, ...]:
    return (
        Slice(f"{norm}.weight", 0, index, "norm", batch_norm=True),
        Slice(f"{norm}.bias", 0, index, "state"),
        Slice(f"{norm}.running_mean", 0, index, "state"),
        Slice(f"{norm}.running_var", 0, index, "state"),
    )


def closed_form_parameters(spec: CNN1dSpec) -> int:
    embeddings = sum(spec.cat_cardinalities) * spec.d_embedding
    dense_out = spec.expansion * spec.length
    total = embeddings + 2 * spec.d_in + (spec.d_in + 1) * dense_out
    c_in = spec.expansion
    for i, (s, m) in enumerate(zip(spec.skip, spec.middle, strict=True)):
        kernel = _KERNEL_FIRST if i == 0 else _KERNEL
        total += 2 * c_in + (c_in * kernel + 1) * s  # first unit: norm + conv
        total += 2 * s + (s * _KERNEL + 1) * m  # middle
        total += 2 * m + (m * _KERNEL + 1) * s  # last
        c_in = s
    flat = spec.skip[-1] * pooled_length(spec.length)
    return total + 2 * flat + (flat + 1) * spec.d_out
