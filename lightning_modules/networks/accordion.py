"""The accordion kind (Anik, Kelso & Lee 2024): an autoencoder whose encoder and decoder are
stacks of expanding and contracting layers around a bottleneck, for the anomaly task.

Every layer is an MLP block (Linear -> BatchNorm -> activation -> Dropout) with its width
explicit; each is a prunable group (`encoder<i>`, `bottleneck`, `decoder<i>`), so the search
narrows them and prune plans remove their neurons like any other group. The output has the
numeric inputs' width (`d_out = d_num` under task anomaly): the network reconstructs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks.base import (
    ACTIVATIONS,
    ConcatenatedInputs,
    check_widths,
)
from lightning_modules.networks.mlp import MLP, MLPSpec

KIND = "accordion"


@dataclass(frozen=True)
class AccordionSpec(ConcatenatedInputs):
    """Args:
    encoder: widths from the input to the bottleneck, e.g. (32, 8, 24): contract, expand,
        contract.
    bottleneck: the narrowest code.
    decoder: widths from the bottleneck to the output.
    """

    d_num: int
    d_out: int
    encoder: tuple[int, ...]
    bottleneck: int
    decoder: tuple[int, ...]
    cat_cardinalities: tuple[int, ...] = ()
    d_embedding: int = 8
    dropout: float = 0.0
    activation: str = "relu"
    batch_norm: bool = True
    kind: str = field(default=KIND)

    def __post_init__(self) -> None:
        self._as_tuples("encoder", "decoder", "cat_cardinalities")
        self._check_common(KIND, self.activation)
        check_widths(KIND, bottleneck=self.bottleneck, d_embedding=self.d_embedding)
        for name in ("encoder", "decoder"):
            if any(w < 1 for w in getattr(self, name)):
                raise TabslimInputError(
                    f"accordion network: every {name} width must be at least 1, but got "
                    f"{name}={list(getattr(self, name))}"
                )

    @property
    def hidden(self) -> tuple[int, ...]:
        """Every layer's width, input to output: the MLP it is built as."""
        return (*self.encoder, self.bottleneck, *self.decoder)

    def group_names(self) -> tuple[str, ...]:
        return (
            *(f"encoder{i}" for i in range(len(self.encoder))),
            "bottleneck",
            *(f"decoder{i}" for i in range(len(self.decoder))),
        )

    def group_sizes(self) -> tuple[int, ...]:
        return self.hidden

    def with_group_sizes(self, sizes: Sequence[int]) -> AccordionSpec:
        sizes = [int(s) for s in sizes]
        n_encoder = len(self.encoder)
        if len(sizes) != len(self.hidden):
            raise TabslimInputError(
                f"this accordion has {len(self.hidden)} groups, but got {len(sizes)} sizes"
            )
        return dataclasses.replace(
            self,
            encoder=tuple(sizes[:n_encoder]),
            bottleneck=sizes[n_encoder],
            decoder=tuple(sizes[n_encoder + 1 :]),
        )

    def as_mlp(self) -> MLPSpec:
        return MLPSpec(
            d_num=self.d_num,
            d_out=self.d_out,
            hidden=self.hidden,
            cat_cardinalities=self.cat_cardinalities,
            d_embedding=self.d_embedding,
            dropout=self.dropout,
            activation=self.activation,
            batch_norm=self.batch_norm,
        )


class Options(BaseModel):
    """The `model:` keys of an accordion baseline in a config."""

    model_config = ConfigDict(extra="forbid", strict=True)
    encoder: list[int] = Field(default_factory=lambda: [64, 16, 48], min_length=1)
    bottleneck: int = Field(default=8, ge=1)
    # null: the encoder mirrored.
    decoder: list[int] | None = None
    d_embedding: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    activation: str = "relu"
    batch_norm: bool = True

    @model_validator(mode="after")
    def _check(self) -> Options:
        widths = [*self.encoder, self.bottleneck, *(self.decoder or [])]
        if any(w < 1 for w in widths):
            raise ValueError(f"model: every accordion width must be at least 1, but got {widths}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {sorted(ACTIVATIONS)}, but got "
                f"{self.activation!r}"
            )
        return self


def baseline(options: Options, **inputs: Any) -> AccordionSpec:
    decoder = options.decoder if options.decoder is not None else list(reversed(options.encoder))
    return AccordionSpec(
        encoder=tuple(options.encoder),
        bottleneck=options.bottleneck,
        decoder=tuple(decoder),
        d_embedding=options.d_embedding,
        dropout=options.dropout,
        activation=options.activation,
        batch_norm=options.batch_norm,
        **inputs,
    )


class Accordion(MLP):
    """An MLP whose hidden layers are the encoder, the bottleneck and the decoder.

    ```
    x_num (B, d_num), x_cat (B, n_cat) -> embed, concatenate -> (B, d_in)
      -> encoder widths -> (B, bottleneck) -> decoder widths -> Linear -> (B, d_out)
    ```

    forward(x_num (B, d_num), x_cat) -> (B, d_out), the reconstruction of x_num under task
    anomaly. Its state_dict is an MLP's; its spec (and so its groups' names) the accordion's.
    """

    def __init__(self, spec: AccordionSpec) -> None:
        super().__init__(spec.as_mlp())
        self.spec = spec  # type: ignore[assignment]


def closed_form_parameters(spec: AccordionSpec) -> int:
    from lightning_modules.networks.mlp import closed_form_parameters as mlp_parameters

    return mlp_parameters(spec.as_mlp())
