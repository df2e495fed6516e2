"""Width-parameterised networks for tabular data, described completely by a spec.

A network is rebuilt exactly from `spec + state_dict`: the spec is plain data (ints, lists,
a few options), so a pruned or shrunken shape can be logged, compared and retrained without
pickling modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_modules.errors import TabslimInputError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass(frozen=True)
class MLPSpec:
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
    kind: str = field(default="mlp")

    def __post_init__(self) -> None:
        # Lists from JSON/YAML become tuples so that specs are hashable and compare by value.
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        object.__setattr__(self, "cat_cardinalities", tuple(int(c) for c in self.cat_cardinalities))
        if self.kind != "mlp":
            raise TabslimInputError(f"network kind must be 'mlp', but got kind={self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise TabslimInputError(
                f"network activation must be one of {sorted(ACTIVATIONS)}, "
                f"but got activation={self.activation!r}"
            )
        if any(w < 1 for w in self.hidden):
            raise TabslimInputError(
                f"every hidden width must be at least 1, but got hidden={list(self.hidden)}"
            )
        if self.d_num < 0 or self.d_out < 1 or self.d_embedding < 1:
            raise TabslimInputError(
                f"network needs d_num >= 0, d_out >= 1, d_embedding >= 1, but got "
                f"d_num={self.d_num}, d_out={self.d_out}, d_embedding={self.d_embedding}"
            )
        if self.d_num == 0 and not self.cat_cardinalities:
            raise TabslimInputError("network has no inputs: d_num=0 and no categorical columns")
        if not 0.0 <= self.dropout < 1.0:
            raise TabslimInputError(f"dropout must be in [0, 1), but got dropout={self.dropout}")

    @property
    def d_in(self) -> int:
        """Width of the first linear layer's input: numeric features plus all embeddings."""
        return self.d_num + len(self.cat_cardinalities) * self.d_embedding

    def with_hidden(self, hidden: Sequence[int]) -> MLPSpec:
        """The same network with other hidden widths (fewer layers allowed)."""
        return dataclasses.replace(self, hidden=tuple(hidden))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `MLPSpec.from_dict(spec.to_dict()) == spec`."""
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        data["cat_cardinalities"] = list(self.cat_cardinalities)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TabslimInputError(
                f"unknown network spec keys {unknown}; expected {sorted(known)}"
            )
        return cls(**data)


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

    forward(x_num (B, d_num) float, x_cat (B, n_cat) int64) -> (B, d_out) logits or values.
    """

    def __init__(self, spec: MLPSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embeddings = nn.ModuleList(
            nn.Embedding(cardinality, spec.d_embedding) for cardinality in spec.cat_cardinalities
        )
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
        parts = [x_num]
        if self.embeddings:
            assert x_cat is not None, "this network has categorical inputs"
            # (B, n_cat) -> n_cat tensors of (B, d_embedding), concatenated after x_num.
            parts.extend(emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else x_num
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Inputs of the right shapes and dtypes, for export, FLOP counting and latency.

        Networks without categorical columns take only x_num, so exported graphs carry no
        empty input.
        """
        x_num = torch.randn(batch_size, self.spec.d_num)
        if not self.spec.cat_cardinalities:
            return (x_num,)
        x_cat = torch.stack(
            [torch.randint(0, c, (batch_size,)) for c in self.spec.cat_cardinalities], dim=1
        )
        return (x_num, x_cat)


def build(spec: MLPSpec, *, seed: int | None = None) -> MLP:
    """A freshly initialised network of the given shape.

    Args:
        seed: makes the initial weights reproducible without touching the global RNG.
    """
    if seed is None:
        return MLP(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(spec)


def load(spec: MLPSpec, state_dict: dict[str, torch.Tensor]) -> MLP:
    """The network `spec` describes, with trained weights; shapes must match exactly."""
    network = build(spec)
    network.load_state_dict(state_dict, strict=True)
    return network


def count_parameters(network: nn.Module) -> int:
    """Trainable and frozen parameters; a tensor shared by two layers counts once."""
    return sum(p.numel() for p in network.parameters())


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
