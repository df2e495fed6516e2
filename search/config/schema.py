"""The one YAML config, validated once where it enters.

Unknown keys and values of the wrong type or out of range are rejected with one line that names
the key, the expected value and the value given. CLI flags override fields after loading and are
validated the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from lightning_modules.errors import TabslimInputError
from pruning.choices import kept_count
from search.config.base import Section, describe_error, expected_keys
from search.config.choices import SHARED_PARAMETERS_ONLY
from search.config.model import ModelConfig, has_batch_norm
from search.config.sections import (
    DataConfig,
    MeasureConfig,
    SearchConfig,
    TrackingConfig,
    TrainingConfig,
)


class Config(Section):
    data: DataConfig = Field(default_factory=lambda: DataConfig(dataset="digits"))
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        # In this order: the first check that fails is the one line a user sees.
        sizes, names = self.model.group_sizes(), self.model.group_names()
        self._check_space_fits_model(sizes, names)
        self._check_confirmation()
        self._check_bn_scale()
        self._check_sampler_sees_both_approaches()
        self._check_prune_order(sizes, names)
        self._check_keep_ratio_leaves_a_unit(sizes, names)
        return self

    def _check_space_fits_model(self, sizes: tuple[int, ...], names: tuple[str, ...]) -> None:
        layers = self.search.space.layers
        if len(layers) > len(sizes):
            raise ValueError(
                f"search.space.layers has {len(layers)} entries, but the {self.model.kind} "
                f"baseline has only {len(sizes)} prunable groups {list(names)}"
            )
        if self.search.space.remove_layers and self.model.kind != "mlp":
            raise ValueError(
                f"search.space.remove_layers drops whole hidden layers of an mlp; a "
                f"{self.model.kind} keeps its blocks, so set it to false"
            )

    def _check_confirmation(self) -> None:
        if self.search.confirm_by == "folds" and self.search.confirm == 1:
            raise ValueError("search.confirm_by folds needs search.confirm of at least 2 folds")
        if self.search.champion.needs_budget != (self.search.budget is not None):
            raise ValueError(
                "search.champion within_budget and search.budget go together: give both, e.g. "
                "champion: within_budget with budget: {parameters: 10000}"
            )

    def _check_bn_scale(self) -> None:
        prune = self.search.prune
        if "bn_scale" in prune.criteria and not has_batch_norm(self.model):
            if "criteria" not in prune.model_fields_set:
                # The default list names every criterion; bn_scale fits only BatchNorm kinds.
                prune.criteria = [c for c in prune.criteria if c != "bn_scale"]
            elif "prune" in self.search.approaches:
                raise ValueError(
                    f"search.prune.criteria has 'bn_scale', but the {self.model.kind} baseline "
                    "has groups without BatchNorm; leave bn_scale out"
                )

    def _check_sampler_sees_both_approaches(self) -> None:
        if (
            self.search.sampler in SHARED_PARAMETERS_ONLY
            and "prune" in self.search.approaches
            and len(self.search.approaches) > 1
            and self.search.space.scheme == "per_layer"
        ):
            # Per layer, prune trials share no parameter with scratch or distill ones (those two
            # draw the same widths), and these samplers model only shared ones: they would
            # silently sample at random (bench/search_quality.py).
            raise ValueError(
                f"search.sampler {self.search.sampler!r} cannot model a study of both "
                "approaches with search.space.scheme per_layer (their parameters differ); use "
                "scheme scale_shape, tpe or random, or set search.approaches to one approach"
            )

    def _check_prune_order(self, sizes: tuple[int, ...], names: tuple[str, ...]) -> None:
        """Also rewrites a valid order that names groups as the indices it means."""
        n_layers = len(sizes)
        order = self.search.prune.order
        if order is None:
            return
        unknown = [g for g in order if isinstance(g, str) and g not in names]
        if unknown:
            raise ValueError(
                f"search.prune.order names group {unknown[0]!r}, which the "
                f"{self.model.kind} baseline does not have; its groups are {list(names)}"
            )
        indices = [names.index(g) if isinstance(g, str) else g for g in order]
        missing = [i for i in indices if not 0 <= i < n_layers]
        if missing:
            raise ValueError(
                f"search.prune.order names group {missing[0]}, but the baseline has groups "
                f"0..{n_layers - 1} {list(names)}"
            )
        if sorted(indices) != list(range(n_layers)):
            raise ValueError(
                f"search.prune.order must list each of the {n_layers} groups once, "
                f"but got {self.search.prune.order}"
            )
        if indices != order:
            self.search.prune.order = list(indices)

    def _check_keep_ratio_leaves_a_unit(
        self, sizes: tuple[int, ...], names: tuple[str, ...]
    ) -> None:
        low = self.search.prune.keep_ratio.low
        for layer, (name, width) in enumerate(zip(names, sizes, strict=True)):
            if "prune" in self.search.approaches and kept_count(low, width) < 1:
                where = f"hidden layer {layer}" if self.model.kind == "mlp" else f"group {name}"
                raise ValueError(
                    f"search.prune.keep_ratio low={low} would leave {where} "
                    f"(width {width}) empty; raise it to at least {0.5 / width:.3g}"
                )


def validate(raw: Any, source: str) -> Config:
    """A Config from parsed YAML, or a one-line TabslimInputError naming `source`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TabslimInputError(
            f"config {source} must be a mapping of sections, but got {type(raw).__name__}"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        message = describe_error(dict(first))
        if first["type"] == "extra_forbidden":
            message += f"; expected one of {expected_keys(Config, first['loc'])}"
        raise TabslimInputError(f"config {source}: {message}") from None


def load_config(path: str | Path | None = None) -> Config:
    """The config in `path`, validated; without one, the built-in defaults.

    The defaults are configs/default.yaml's values (a test keeps the two equal), so an installed
    wheel, which does not ship configs/, runs the same as a checkout.
    """
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise TabslimInputError(f"config file '{path}' does not exist (expected a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TabslimInputError(f"config '{path}' is not valid YAML{where}") from None
    return validate(raw, f"'{path}'")


def override(config: Config, source: str, **changes: Any) -> Config:
    """A copy of `config` with dotted keys changed (`data.path=...`), validated again."""
    raw = config.model_dump()
    for dotted, value in changes.items():
        if value is None:
            continue
        *sections, key = dotted.split(".")
        target = raw
        for section in sections:
            target = target[section]
        target[key] = value
        if dotted == "data.path":
            raw["data"]["dataset"] = None
        if dotted == "data.dataset":
            raw["data"]["path"] = None
    return validate(raw, source)
