"""The Optuna samplers a search can use, by name, seeded.

The names are in `search.config.choices`, read by the config and the CLI's help without Optuna.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from lightning_modules.errors import TabslimInputError
from search.config.choices import SAMPLERS

if TYPE_CHECKING:
    import optuna


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler `name`, seeded. Constraints come from `Trial.set_constraint` in the objective."""
    import optuna

    if name == "tpe":
        # multivariate: the layer widths interact; group: scratch and prune trials share the
        # width parameters but not the rest; constant_liar: parallel workers spread out. Five
        # startup trials: the baseline and the uniform ladder already cover the sizes.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        # GP models only parameters every trial shares; the config refuses it for a study of
        # both approaches, whose trials share none. Its warning would repeat per parameter.
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=8, warn_independent_sampling=False
        )
    if name == "qmc":
        # scramble: without it the Sobol sequence, and so the study, ignores the seed.
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    raise TabslimInputError(f"unknown sampler {name!r}; expected one of {list(SAMPLERS)}")
