"""What every process of a study rebuilds first: its name, where its networks live, its context.

Shared by the coordinator (`tabslim search`), its local workers and `tabslim worker`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna

from lightning_modules.data import TabularDataModule
from search.cluster import redact
from search.config import Config
from search.study.adapters import baseline_spec, data_fingerprint, load_data
from search.study.objective import SearchContext
from search.study.settings import StudySettings
from search.study.storage import DEFAULT_STORAGE

__all__ = ["build_context", "quiet", "storage_label", "study_name", "study_settings", "trials_root"]

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
