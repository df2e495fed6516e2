"""The names pruning understands, and the sensitivity scan's defaults, as plain constants.

Config validation and the CLI's help read these without importing torch or Lightning, so that
`tabslim --help` stays fast; the modules that implement each name import them from here.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from lightning_modules.errors import TabslimInputError

CRITERIA: tuple[str, ...] = (
    "l1",
    "l2",
    "bn_scale",
    "activation_mean",
    "apoz",
    "taylor",
    "random",
    "target_perturbation",
)
# The control: a search should not spend trials on it unless asked.
CONTROL_CRITERION = "random"

# adaptive: the accept/rollback loop of Gurbych and Prymachenko chooses the keep ratios.
Schedule = Literal["one_shot", "iterative", "adaptive"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

# `tabslim sensitivity`: shares of a layer removed, fine-tuning budgets, and the criterion.
DEFAULT_RATIOS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
DEFAULT_EPOCHS: tuple[int, ...] = (0, 1)
DEFAULT_CRITERION = "l1"


def check_criterion(name: str) -> str:
    """`name` if it is a known criterion, else a one-line error listing the known ones."""
    if name not in CRITERIA:
        raise TabslimInputError(
            f"unknown pruning criterion {name!r}; expected one of {list(CRITERIA)}"
        )
    return name


def kept_count(keep_ratio: float, width: int) -> int:
    """round(ratio x width), halves up: Python's round() takes 2.5 to 2, which surprises."""
    return math.floor(keep_ratio * width + 0.5)
