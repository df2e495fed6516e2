"""The `model:` section: `kind`, and the options that kind's family validates itself.

The keys other than `kind` are checked by the family (`lightning_modules.networks.KINDS`),
so that a new kind brings its own options without touching the search.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from lightning_modules.networks import KINDS, NetworkSpec
from search.config.base import Section, describe_error


class ModelConfig(Section):
    """The baseline network: `kind`, and the keys that kind's family takes.

    The keys other than `kind` are validated by the family (`lightning_modules.networks.KINDS`),
    so that a new kind brings its own options without touching the search.
    """

    model_config = ConfigDict(extra="allow", strict=True, validate_assignment=True)
    kind: str = "mlp"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {sorted(KINDS)}, but got {self.kind!r}")
        try:
            options = KINDS[self.kind].options.model_validate(self.model_extra or {})
        except ValidationError as error:
            first: dict[str, Any] = dict(error.errors()[0])
            first["loc"] = ("model", *first["loc"])
            message = describe_error(first)
            if first["type"] == "extra_forbidden":
                allowed = sorted(["kind", *KINDS[self.kind].options.model_fields])
                message += f" for model.kind {self.kind!r}; expected one of {allowed}"
            raise ValueError(message) from None
        # Every option explicit, defaults included: configs that mean the same compare equal.
        object.__setattr__(self, "__pydantic_extra__", options.model_dump())
        return self

    @property
    def options(self) -> BaseModel:
        """The kind's own options, validated, with its defaults filled in."""
        return KINDS[self.kind].options.model_validate(self.model_extra or {})

    def group_sizes(self) -> tuple[int, ...]:
        """The baseline's prunable group sizes, which do not depend on the data's columns."""
        return tuple(self._probe().group_sizes())

    def group_names(self) -> tuple[str, ...]:
        return tuple(self._probe().group_names())

    def _probe(self) -> NetworkSpec:
        spec: NetworkSpec = KINDS[self.kind].baseline(
            self.options, d_num=1, cat_cardinalities=(), d_out=1
        )
        return spec


def has_batch_norm(model: ModelConfig) -> bool:
    """Whether every prunable group of the baseline has a BatchNorm (what bn_scale reads)."""
    from lightning_modules.networks import build

    spec = KINDS[model.kind].baseline(model.options, d_num=1, cat_cardinalities=(), d_out=1)
    groups = build(spec).prunable_groups()
    return all(any(s.batch_norm for s in g.slices_of("norm")) for g in groups)
