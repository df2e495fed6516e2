"""The network-family interface: what every network kind provides, and nothing more.

A kind (mlp, resnet, ft_transformer, cnn1d) is a spec, a builder and a list of prunable groups.
A spec is plain data with every width explicit and a JSON round trip. A **prunable group** is a
named set of units (neurons, ReGLU pairs, attention heads, conv channels, a coupled residual
width) and the parameter dimensions each unit spans. Pruning, the search space, criteria,
sensitivity, export, the MLflow model and retraining see only this interface, so adding a kind
touches `lightning_modules/` and nothing in the search.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from lightning_modules.errors import TabslimInputError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}

# What a slice of a parameter is to its group's units:
# - "weight": the units' own incoming weights (their rows); magnitude criteria read these;
# - "bias": their biases; "norm": the affine scale of a BatchNorm/LayerNorm over the units
#   (bn_scale reads BatchNorm ones); "state": other per-unit buffers and shifts;
# - "consumer": a later layer's weights that read the units (zeroing them silences the units).
Role = Literal["weight", "bias", "norm", "state", "consumer"]


@dataclass(frozen=True)
class Slice:
    """Positions along one dimension of one `state_dict` entry that a group's units own.

    `index` is (size, k): unit i owns positions `index[i]`, in the same canonical order in every
    network of the kind, so that removal can map old positions to new ones. A group owns the
    whole dimension it slices.
    """

    key: str
    dim: int
    index: torch.Tensor
    role: Role
    batch_norm: bool = False


@dataclass(frozen=True)
class Gate:
    """Where the units' outputs can be read: a submodule whose output holds them.

    `index` is (size, k), positions along `dim` of that output, like `Slice.index`.
    """

    module: str
    dim: int
    index: torch.Tensor


@dataclass(frozen=True)
class PrunableGroup:
    name: str
    size: int
    slices: tuple[Slice, ...]
    gate: Gate

    def slices_of(self, *roles: Role) -> tuple[Slice, ...]:
        return tuple(s for s in self.slices if s.role in roles)


def units(size: int, k: int = 1, *, offset: int = 0) -> torch.Tensor:
    """(size, k) positions of `size` consecutive blocks of k: unit i owns i*k .. i*k+k-1."""
    return torch.arange(offset, offset + size * k, dtype=torch.long).view(size, k)


def interleaved(size: int, parts: int) -> torch.Tensor:
    """(size, parts) positions of units split across `parts` equal halves of a dimension.

    A ReGLU layer of `size` units has 2 x size outputs: unit i owns output i (the value) and
    output size + i (the gate).
    """
    return torch.stack([torch.arange(size) + p * size for p in range(parts)], dim=1)


Spec = TypeVar("Spec", bound="NetworkSpec")
Dataclass = TypeVar("Dataclass")


@runtime_checkable
class NetworkSpec(Protocol):
    """Plain data that builds one network of a kind; every width explicit."""

    # Read-only, as the frozen dataclasses that implement it have them.
    @property
    def kind(self) -> str: ...

    @property
    def d_num(self) -> int: ...

    @property
    def d_out(self) -> int: ...

    @property
    def cat_cardinalities(self) -> tuple[int, ...]: ...

    @property
    def dropout(self) -> float: ...

    def group_names(self) -> tuple[str, ...]: ...

    def group_sizes(self) -> tuple[int, ...]: ...

    def with_group_sizes(self: Spec, sizes: Sequence[int]) -> Spec: ...

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class TabularNetwork(Protocol):
    """forward(x_num (B, d_num) float, x_cat (B, n_cat) int64 or None) -> (B, d_out)."""

    spec: Any

    def prunable_groups(self) -> list[PrunableGroup]: ...

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]: ...

    def __call__(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> Any: ...


def group_widths_key(spec: NetworkSpec) -> str:
    """The widths of every group, joined by '-': how a shape reads in tables and MLflow."""
    return "-".join(map(str, spec.group_sizes()))


def check_inputs(*, d_num: int, d_out: int, cat_cardinalities: Sequence[int]) -> None:
    if d_num < 0 or d_out < 1:
        raise TabslimInputError(
            f"network needs d_num >= 0 and d_out >= 1, but got d_num={d_num}, d_out={d_out}"
        )
    if d_num == 0 and not cat_cardinalities:
        raise TabslimInputError("network has no inputs: d_num=0 and no categorical columns")
    if any(c < 1 for c in cat_cardinalities):
        raise TabslimInputError(
            f"every categorical cardinality must be at least 1, got {list(cat_cardinalities)}"
        )


def check_widths(kind: str, **widths: int | Sequence[int]) -> None:
    """Every named width (or each entry of a list of widths) is at least 1."""
    for name, value in widths.items():
        values = [value] if isinstance(value, int) else list(value)
        if not values or any(int(v) < 1 for v in values):
            raise TabslimInputError(
                f"{kind} network: every {name} must be at least 1, but got {name}={value!r}"
            )


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise TabslimInputError(f"dropout must be in [0, 1), but got dropout={dropout}")


def check_activation(activation: str, allowed: Sequence[str] = tuple(ACTIVATIONS)) -> None:
    if activation not in allowed:
        raise TabslimInputError(
            f"network activation must be one of {sorted(allowed)}, but got {activation=}"
        )


class SpecData:
    """The JSON round trip every kind's spec (a frozen dataclass) shares.

    `type(spec).from_dict(spec.to_dict()) == spec`; lists from JSON or YAML become tuples.
    """

    def to_dict(self) -> dict[str, Any]:
        return spec_to_dict(self)

    @classmethod
    def from_dict(cls: type[Dataclass], data: dict[str, Any]) -> Dataclass:
        return spec_from_fields(cls, data)

    def _as_tuples(self, *names: str) -> None:
        """Lists become tuples of ints, so that specs are hashable and compare by value."""
        for name in names:
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    # Fields every kind's spec declares (as dataclass fields of its own).
    kind: str
    d_num: int
    d_out: int
    cat_cardinalities: tuple[int, ...]
    dropout: float

    def _check_common(self, kind: str, activation: str | None = None) -> None:
        """What every kind checks: that the spec is its own kind's, the inputs and outputs, the
        dropout, and (for kinds that take one) the activation."""
        if self.kind != kind:
            raise TabslimInputError(
                f"{type(self).__name__} is for kind {kind!r}, but got {self.kind!r}"
            )
        if activation is not None:
            check_activation(activation)
        check_inputs(d_num=self.d_num, d_out=self.d_out, cat_cardinalities=self.cat_cardinalities)
        check_dropout(self.dropout)


class ConcatenatedInputs(SpecData):
    """A spec whose network takes the numeric features and one `d_embedding`-wide embedding per
    categorical column, side by side (every kind but the FT-Transformer, which tokenizes)."""

    d_embedding: int

    @property
    def d_in(self) -> int:
        """Width of the first layer's input: numeric features plus all embeddings."""
        return self.d_num + len(self.cat_cardinalities) * self.d_embedding


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A dataclass spec as JSON-ready data: tuples become lists."""
    data = dataclasses.asdict(spec)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def spec_from_fields(cls: type[Dataclass], data: dict[str, Any]) -> Dataclass:
    """`cls(**data)` that names unknown keys instead of a TypeError."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        kind = data.get("kind", "?")
        raise TabslimInputError(
            f"unknown {kind} network spec keys {unknown}; expected {sorted(known)}"
        )
    return cls(**data)


def example_inputs_for(spec: NetworkSpec, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shapes and dtypes, for export, FLOP counting and latency.

    Networks without categorical columns take only x_num, so exported graphs carry no empty
    input.
    """
    x_num = torch.randn(batch_size, spec.d_num)
    if not spec.cat_cardinalities:
        return (x_num,)
    x_cat = torch.stack([torch.randint(0, c, (batch_size,)) for c in spec.cat_cardinalities], 1)
    return (x_num, x_cat)


def make_embeddings(cat_cardinalities: Sequence[int], d_embedding: int) -> nn.ModuleList:
    """One embedding per categorical column (see `embed_inputs`)."""
    return nn.ModuleList(nn.Embedding(c, d_embedding) for c in cat_cardinalities)


def embed_inputs(
    embeddings: nn.ModuleList, x_num: torch.Tensor, x_cat: torch.Tensor | None
) -> torch.Tensor:
    """(B, d_num) and (B, n_cat) -> (B, d_num + n_cat * d_embedding): embeddings after x_num."""
    if not embeddings:
        return x_num
    assert x_cat is not None, "this network has categorical inputs"
    return torch.cat([x_num, *(emb(x_cat[:, i]) for i, emb in enumerate(embeddings))], dim=1)


def count_parameters(network: nn.Module) -> int:
    """Trainable and frozen parameters; a tensor shared by two layers counts once."""
    return sum(p.numel() for p in network.parameters())


# Rows per forward pass when a whole split is scored at once: a 256-wide layer's output over
# the 1.5M validation rows of a 10M-row table is 1.5 GB, and a few such are alive at once.
INFERENCE_ROWS = 65_536


def infer(network: nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
    """The outputs of `network` (in eval mode, on the CPU) for every row, `INFERENCE_ROWS` at a
    time: the same values as one pass, without activations that grow with the rows."""
    network = network.cpu().eval()
    with torch.inference_mode():
        parts = [
            network(x_num[start : start + INFERENCE_ROWS], x_cat[start : start + INFERENCE_ROWS])
            for start in range(0, max(len(x_num), 1), INFERENCE_ROWS)
        ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@contextlib.contextmanager
def evaluating(network: nn.Module) -> Iterator[None]:
    """Eval mode while inside; then every module's own train/eval flag back.

    Flags are saved per module because a caller may have frozen some parts in eval mode;
    `network.train(previous)` would flip them all alike.
    """
    flags = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def unit_values(state: dict[str, torch.Tensor], piece: Slice) -> torch.Tensor:
    """(size, n): every value of `state[piece.key]` that each unit owns, one row per unit."""
    tensor = state[piece.key].detach()
    picked = tensor.index_select(piece.dim, piece.index.flatten()).movedim(piece.dim, 0)
    return picked.reshape(piece.index.shape[0], -1)
