"""Optuna studies: storage, directions, lookup, and the check that a resumed study still fits.

The default storage is a journal file under mlruns/: Optuna advises against SQLite for several
worker processes, and its journal file storage is built for exactly that on one machine. Any
Optuna storage URL (PostgreSQL for a cluster) is accepted instead.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection

from lightning_modules.errors import TabslimInputError
from search.cluster import redact, retry_callback
from search.config import Config
from search.study import attributes
from search.study.samplers import make_sampler
from search.study.settings import StudySettings, check_same_data

DEFAULT_STORAGE = Path("mlruns") / "optuna.journal"


def open_storage(url: str | None, *, max_retries: int = 2) -> BaseStorage:
    """An Optuna storage from a URL or a journal file path (default: mlruns/optuna.journal).

    Raises TabslimInputError naming the URL when the storage cannot be reached.

    Args:
        max_retries: how often a trial whose process died is queued again (RDB heartbeats;
            a journal's dead trials are recovered by `search.cluster.liveness`).
    """
    if url is None or "://" not in url:
        path = Path(url) if url is not None else DEFAULT_STORAGE
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        # Heartbeats let a resumed study mark the trials of a killed worker as failed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=60,
                grace_period=180,
                heartbeat_stale_trial_callback=retry_callback(max_retries),
            )
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or "a database driver"
        raise TabslimInputError(
            f"storage {redact(repr(url))} needs the Python package {missing!r}, "
            "which is not installed"
        ) from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds; one line for all
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TabslimInputError(
            f"cannot open storage {redact(repr(url))}: {redact(reason)}"
        ) from None


def directions(higher_is_better: bool) -> list[StudyDirection]:
    metric = StudyDirection.MAXIMIZE if higher_is_better else StudyDirection.MINIMIZE
    return [metric, StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]


def open_study(
    name: str, storage: BaseStorage, storage_label: str, config: Config, settings: StudySettings
) -> optuna.Study:
    """Create the study, or load it if it exists and was made with the same objectives and space.

    A new study gets `settings` and names its objectives (optuna-dashboard and Optuna's plots
    show them); an existing one is refused with a one-line error where its settings differ.
    """
    wanted = directions(settings.higher_is_better)
    sampler = make_sampler(config.search.sampler, config.search.seed)
    try:
        existing = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        existing = None
    if existing is None:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, directions=wanted
        )
        settings.write(study)
        with warnings.catch_warnings():
            # Experimental since Optuna 3.2 and unchanged in 5.0; the names are worth it.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.objective_names)
        return study
    if list(existing.directions) != wanted:
        raise TabslimInputError(
            f"study '{name}' in {storage_label} has directions "
            f"{[d.name.lower() for d in existing.directions]}, but this config needs "
            f"{[d.name.lower() for d in wanted]}; use another --study name"
        )
    stored = StudySettings.read(existing)
    settings.check_matches(stored, f"study '{name}' in {storage_label}")
    if settings.data_fingerprint is not None:
        check_same_data(stored, settings.data_fingerprint, str(settings.data), name)
    # The champion rule and its budget may change between runs: the latest run's decide.
    kept = dict(stored.config or {})
    kept["search"] = dict(kept.get("search") or {}) | {"budget": settings.budget}
    dataclasses.replace(stored, champion=settings.champion, config=kept).write(existing)
    return existing


def find_study(name: str, storage_url: str | None) -> optuna.Study:
    """The existing study `name`, or a one-line error naming the storage; creates nothing."""
    label = storage_url or str(DEFAULT_STORAGE)
    if (storage_url is None or "://" not in storage_url) and not Path(label).exists():
        raise TabslimInputError(f"no study '{name}': the storage {label} does not exist")
    storage = open_storage(storage_url)
    names = [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise TabslimInputError(f"no study '{name}' in {label}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def searched_trials(study: optuna.Study) -> int:
    """COMPLETE trials the search itself ran (quantized variants left out)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # A quantized copy of a front member is a finished trial, but not one the search ran.
    return sum(not attributes.is_variant(t) for t in complete)


class StopAtTarget:
    """An `optimize` callback: stop once the study has `n_trials` searched trials.

    Optuna's MaxTrialsCallback would count quantized variants too.
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if searched_trials(study) >= self.n_trials:
            study.stop()
