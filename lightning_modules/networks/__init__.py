"""The network kinds behind one interface.

- `base.py`: the family interface every kind provides: its spec (plain data, validated once),
  its prunable groups and their slices, and the network base class;
- `mlp.py`, `resnet.py`, `ft_transformer.py`, `cnn1d.py`, `accordion.py`: the kinds;
- `kinds.py`: `KINDS` (`model.kind` to its family), building, loading and spec round trips.

Import from here; the modules are the kinds' own rooms.
"""

from lightning_modules.networks.base import (
    ACTIVATIONS,
    NetworkSpec,
    PrunableGroup,
    TabularNetwork,
    count_parameters,
    evaluating,
    group_widths_key,
    infer,
)
from lightning_modules.networks.kinds import (
    KINDS,
    Family,
    build,
    family,
    kind_baseline_spec,
    load,
    spec_from_dict,
)
from lightning_modules.networks.mlp import MLP, Block, MLPSpec

__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "MLP",
    "Block",
    "Family",
    "MLPSpec",
    "NetworkSpec",
    "PrunableGroup",
    "TabularNetwork",
    "infer",
    "build",
    "count_parameters",
    "evaluating",
    "family",
    "group_widths_key",
    "kind_baseline_spec",
    "load",
    "spec_from_dict",
]
