"""What every process of a study rebuilds first: its name, where its networks live, and the
`SearchContext` every trial shares.

Shared by the coordinator (`tabslim search`), its local workers and `tabslim worker`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import NetworkSpec
from search.cluster import RemoteNetworks, fetch, redact
from search.config import Config
from search.inputs import baseline_spec, data_fingerprint, load_data
from search.measure import ServedRows
from search.study.settings import StudySettings
from search.study.storage import DEFAULT_STORAGE

__all__ = [
    "SearchContext",
    "build_context",
    "quiet",
    "storage_label",
    "study_name",
    "study_settings",
    "trials_root",
]


@dataclass
class SearchContext:
    """What every trial of a study shares; rebuilt identically in each worker process."""

    config: Config
    data: TabularDataModule
    baseline: NetworkSpec
    trials_dir: Path
    # The trained baseline, loaded once per process for prune trials.
    trained_baseline: nn.Module | None = None
    # The baseline's outputs on the training rows, loaded once per process for distill trials.
    teacher: torch.Tensor | None = None
    # The baseline's per-row scores by split, loaded once per process for paired deltas.
    baseline_rows: dict[str, np.ndarray] | None = None
    # The MLflow server that holds every trial's network when nodes share no disk.
    remote: RemoteNetworks | None = None

    def network_dir(self, study: optuna.Study, number: int) -> Path:
        """Trial `number`'s saved network on this node (downloaded first if need be)."""
        return fetch(study, number, self.trials_dir, self.remote)

    @property
    def metric(self) -> str:
        return self.data.task.metric

    def served_rows(self) -> ServedRows:
        """Validation rows as a user sends them: a trial's latency is the served graph's on
        them, preprocessing inside, as the logged model serves."""
        return ServedRows.from_data(self.data)

    @property
    def higher_is_better(self) -> bool:
        return self.data.task.higher_is_better


# A failing candidate (say, a width that diverges) is recorded as FAIL; the search goes on.
TRIAL_ERRORS = (RuntimeError, FloatingPointError)


def study_name(config: Config) -> str:
    if config.search.study is not None:
        return config.search.study
    source = config.data.dataset or Path(config.data.path or "data").stem
    return f"tabslim-{source}"


def storage_label(config: Config) -> str:
    """The storage as shown to people: its password, if any, as ***."""
    return redact(config.search.storage or str(DEFAULT_STORAGE))


def trials_root(config: Config) -> Path:
    """Where trials keep their networks: beside the MLflow SQLite store (default mlruns/)."""
    uri = config.tracking.uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "studies"
    return Path("mlruns") / "studies"


def build_context(config: Config, data: TabularDataModule | None = None) -> SearchContext:
    data = data if data is not None else load_data(config)
    return SearchContext(
        config=config,
        data=data,
        baseline=baseline_spec(config, data),
        trials_dir=trials_root(config) / study_name(config),
    )


def study_settings(ctx: SearchContext) -> StudySettings:
    """The settings a new study gets; the config and trials folder let later commands (report,
    sensitivity, prune trials in other workers) rebuild the data and find the networks."""
    return StudySettings.for_search(
        ctx.config,
        task=ctx.data.task,
        data=ctx.data.source,
        target=ctx.data.target,
        trials_dir=str(ctx.trials_dir.resolve()),
        data_fingerprint=data_fingerprint(ctx.data),
    )


def quiet() -> None:
    """Optuna's and MLflow's chatter down to warnings, for a command's own output."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*is out of range for distribution.*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
