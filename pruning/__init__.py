"""What shrinks: importance criteria, physical neuron removal, sensitivity scans, pruning plans.

Names load lazily (PEP 562), as in `lightning_modules`, so that importing one module (say, the
criteria names for config checks) does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CRITERIA": "criteria",
    "calibration_batch": "criteria",
    "check_criterion": "criteria",
    "layer_scores": "criteria",
    "fine_tune": "fine_tune",
    "PruningPlan": "plan",
    "apply_plan": "plan",
    "keep_top": "removal",
    "remove_neurons": "removal",
    "SensitivityResult": "sensitivity",
    "scan": "sensitivity",
    "ReductiveResult": "target_perturbation",
    "perturbation_scores": "target_perturbation",
    "reductive_prune": "target_perturbation",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pruning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pruning.{_WHERE[name]}"), name)
