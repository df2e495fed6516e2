"""Named choices that the config, the CLI's help and the code behind them share.

Plain constants, so that reading them imports neither Optuna nor torch (`tabslim --help` is fast).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

__all__ = [
    "ChampionRule",
    "TASK_CHOICES",
    "TaskChoice",
    "DRIFT_ALPHA",
    "DRIFT_PSI_THRESHOLD",
    "PRECISIONS",
    "RUNTIMES",
    "SAMPLERS",
    "SHARED_PARAMETERS_ONLY",
    "Precision",
    "Runtime",
    "Sampler",
]


class ChampionRule(StrEnum):
    """How a search picks its champion (`search.champion`; `search.front.champion` applies it).

    A StrEnum: it compares equal to, prints as and is stored as its YAML value.
    """

    # The smallest candidate whose certified interval lies within the floor (the default).
    CONFIDENT = "confident"
    # The smallest trial within the floor by its validation point estimate, uncertified.
    SMALLEST = "smallest"
    # The most accurate candidate within `search.budget`.
    WITHIN_BUDGET = "within_budget"

    @property
    def needs_budget(self) -> bool:
        """Whether the rule reads `search.budget`, and certifies the most accurate candidates
        within it rather than a sequence of the smallest."""
        return self is ChampionRule.WITHIN_BUDGET


# Where latency is timed: eager torch, or ONNX Runtime on the CPU (`search.measure.latency`).
Runtime = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

# The Optuna samplers a search can use (`search.study.samplers` builds them).
Sampler = Literal["tpe", "nsga2", "random", "gp", "qmc"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
# These model only parameters that every trial shares; a study of both approaches has none.
SHARED_PARAMETERS_ONLY: tuple[str, ...] = ("nsga2", "gp", "qmc")

# The INT8 copies a search can make of its front members (`search.front.quantized`).
Precision = Literal["int8_dynamic", "int8_static"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# A column counts as drifted when its PSI reaches the threshold and its corrected p-value is
# below alpha (`search.monitor.drift`, `tabslim drift`).
DRIFT_PSI_THRESHOLD, DRIFT_ALPHA = 0.2, 0.05

# What `data.task` and `--task` accept: a task, or auto (inferred from the target) or
# classification (binary or multiclass, from the number of classes).
TaskChoice = Literal["auto", "classification", "binary", "multiclass", "regression", "anomaly"]
TASK_CHOICES: tuple[str, ...] = get_args(TaskChoice)
