"""The MLP kind: Linear -> BatchNorm -> activation -> Dropout blocks, then a linear head.

Each hidden block is one prunable group of neurons (`layer0`, `layer1`, ...).
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

KIND = "mlp"


@dataclass(frozen=True)
class MLPSpec(ConcatenatedInputs):
    """Everything needed to build an `MLP`; every width is explicit.

    Args:
        d_num: numeric input features (missing-value indicators included).
        cat_cardinalities: categories per categorical column, the reserved unseen index included.
        d_embedding: embedding width of each categorical column.
        hidden: width of each hidden block, first to last.
        d_out: outputs (classes for classification, 1 for regression).
    """

    d_num: int
    d_out: int
    hidden: tuple[int, ...]
    cat_cardinalities: tuple[int, ...] = ()
    d_embedding: int = 8
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = True
    kind: str = field(default=KIND)

    def __post_init__(self) -> None:
        self._as_tuples("hidden", "cat_cardinalities")
        self._check_common(KIND, self.activation)
        if not self.hidden or any(w < 1 for w in self.hidden):
            raise TabslimInputError(
                f"every hidden width must be at least 1, but got hidden={list(self.hidden)}"
            )
        check_widths(KIND, d_embedding=self.d_embedding)

    def group_names(self) -> tuple[str, ...]:
        return tuple(f"layer{i}" for i in range(len(self.hidden)))

    def group_sizes(self) -> tuple[int, ...]:
        return self.hidden

    def with_group_sizes(self, sizes: Sequence[int]) -> MLPSpec:
        return self.with_hidden(sizes)

    def with_hidden(self, hidden: Sequence[int]) -> MLPSpec:
        """The same network with other hidden widths (fewer layers allowed)."""
        return dataclasses.replace(self, hidden=tuple(hidden))


class Options(BaseModel):
    """The `model:` keys of an MLP baseline in a config."""

    model_config = ConfigDict(extra="forbid", strict=True)
    hidden: list[int] = Field(default_factory=lambda: [256, 256, 128], min_length=1)
    d_embedding: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    activation: str = "relu"
    batch_norm: bool = True

    @model_validator(mode="after")
    def _check(self) -> Options:
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"model.hidden widths must be at least 1, but got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {sorted(ACTIVATIONS)}, "
                f"but got {self.activation!r}"
            )
        return self


def baseline(options: Options, **inputs: Any) -> MLPSpec:
    return MLPSpec(
        hidden=tuple(options.hidden),
        d_embedding=options.d_embedding,
        dropout=options.dropout,
        activation=options.activation,
        batch_norm=options.batch_norm,
        **inputs,
    )


class Block(nn.Module):
    """The Kaggle-style hidden block: Linear, BatchNorm, activation, Dropout."""

    def __init__(
        self, *, d_in: int, d_out: int, activation: str, dropout: float, batch_norm: bool
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm: nn.Module = nn.BatchNorm1d(d_out) if batch_norm else nn.Identity()
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(self.norm(self.linear(x))))


class MLP(nn.Module):
    """An MLP over numeric features and embedded categorical columns.

    ```
    x_num (B, d_num), x_cat (B, n_cat) -> embed, concatenate -> (B, d_in)
      -> [Linear -> BatchNorm -> activation -> Dropout] per hidden width -> (B, hidden[-1])
      -> Linear -> (B, d_out): logits (classes) or values (regression, reconstruction)
    ```
    d_in = d_num + n_cat * d_embedding. Prunable groups: one per hidden block (`layer<i>`).
    """

    def __init__(self, spec: MLPSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embeddings = make_embeddings(spec.cat_cardinalities, spec.d_embedding)
        widths = [spec.d_in, *spec.hidden]
        self.blocks = nn.ModuleList(
            Block(
                d_in=d_in,
                d_out=d_out,
                activation=spec.activation,
                dropout=spec.dropout,
                batch_norm=spec.batch_norm,
            )
            for d_in, d_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], spec.d_out)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        x = embed_inputs(self.embeddings, x_num, x_cat)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return example_inputs_for(self.spec, batch_size)

    def prunable_groups(self) -> list[PrunableGroup]:
        """One group per hidden block: its neurons' rows, and the next layer's columns."""
        groups = []
        n_layers = len(self.spec.hidden)
        for i, (name, width) in enumerate(
            zip(self.spec.group_names(), self.spec.hidden, strict=True)
        ):
            rows = units(width)
            block = f"blocks.{i}"
            following = f"blocks.{i + 1}.linear.weight" if i + 1 < n_layers else "head.weight"
            slices = [
                Slice(f"{block}.linear.weight", 0, rows, "weight"),
                Slice(f"{block}.linear.bias", 0, rows, "bias"),
                Slice(following, 1, rows, "consumer"),
            ]
            if self.spec.batch_norm:
                slices += [
                    Slice(f"{block}.norm.weight", 0, rows, "norm", batch_norm=True),
                    Slice(f"{block}.norm.bias", 0, rows, "state"),
                    Slice(f"{block}.norm.running_mean", 0, rows, "state"),
                    Slice(f"{block}.norm.running_var", 0, rows, "state"),
                ]
            groups.append(
                PrunableGroup(name, width, tuple(slices), Gate(f"{block}.activation", -1, rows))
            )
        return groups


def closed_form_parameters(spec: MLPSpec) -> int:
    """Parameters of `MLP(spec)` counted from the spec alone."""
    widths = [spec.d_in, *spec.hidden]
    linear = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    norms = 2 * sum(spec.hidden) if spec.batch_norm else 0
    embeddings = sum(spec.cat_cardinalities) * spec.d_embedding
    return linear + norms + embeddings + (widths[-1] + 1) * spec.d_out
