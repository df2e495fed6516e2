"""Optuna studies: storage, sampler, directions, and the check that a resumed study still fits.

The default storage is a journal file under mlruns/: Optuna advises against SQLite for several
worker processes, and its journal file storage is built for exactly that on one machine. Any
Optuna storage URL (PostgreSQL for a cluster) is accepted instead.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection

from lightning_modules.errors import TabslimInputError
from search.config import Config

DEFAULT_STORAGE = Path("mlruns") / "optuna.journal"
SIZE_METRICS = {"parameters": "parameters", "bytes": "size_bytes", "flops": "flops"}
ATTR = "tabslim"
# Study attributes that may differ between runs of one study: results and bookkeeping.
UNCOMPARED = frozenset({"baseline_trial", "baseline_metric", "config", "trials_dir"})


def open_storage(url: str | None) -> BaseStorage:
    """An Optuna storage from a URL or a journal file path (default: mlruns/optuna.journal).

    Raises TabslimInputError naming the URL when the storage cannot be reached.
    """
    if url is None or "://" not in url:
        path = Path(url) if url is not None else DEFAULT_STORAGE
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        # Heartbeats let a resumed study mark the trials of a killed worker as failed.
        return RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or "a database driver"
        raise TabslimInputError(
            f"storage {_redact(url)} needs the Python package {missing!r}, which is not installed"
        ) from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds; one line for all
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TabslimInputError(f"cannot open storage {_redact(url)}: {reason}") from None


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return repr(url)
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" not in credentials:
        return repr(url)
    user = credentials.split(":", 1)[0]
    return repr(f"{scheme}://{user}:***@{host}")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler `name`, seeded. Constraints come from `Trial.set_constraint` in the objective."""
    if name == "tpe":
        # multivariate: the layer widths interact; group: scratch and prune trials sample
        # different parameters; constant_liar: parallel workers spread out.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=8
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
    raise TabslimInputError(f"unknown sampler {name!r}; expected tpe, nsga2, random, gp or qmc")


def directions(higher_is_better: bool) -> list[StudyDirection]:
    metric = StudyDirection.MAXIMIZE if higher_is_better else StudyDirection.MINIMIZE
    return [metric, StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]


def fingerprint(config: Config, task: str, metric: str, higher_is_better: bool) -> dict[str, Any]:
    """What makes two runs of a study comparable: task, objectives, baseline and space.

    Stored with the study; a later run whose config differs here is refused, since its trials
    would not be comparable with the ones already in the study.
    """
    search = config.search
    return {
        "task": task,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "size": SIZE_METRICS[search.size],
        "latency": latency_metric(config),
        "max_metric_drop": search.max_metric_drop,
        "baseline_hidden": list(config.model.hidden),
        "space": search.space.model_dump(),
        "approaches": list(search.approaches),
        "prune": search.prune.model_dump() if "prune" in search.approaches else None,
    }


def latency_metric(config: Config) -> str:
    latency = config.search.latency
    return f"latency_{latency.runtime}_b{latency.batch_size}_median_ms"


def open_study(
    name: str,
    storage: BaseStorage,
    storage_label: str,
    config: Config,
    attrs: dict[str, Any],
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists and was made with the same objectives and space.

    Returns the study and whether it already existed.
    """
    wanted = directions(attrs["higher_is_better"])
    sampler = make_sampler(config.search.sampler, config.search.seed)
    try:
        existing = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        existing = None
    if existing is None:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, directions=wanted
        )
        study.set_user_attr(ATTR, attrs)
        return study, False
    if list(existing.directions) != wanted:
        raise TabslimInputError(
            f"study '{name}' in {storage_label} has directions "
            f"{[d.name.lower() for d in existing.directions]}, but this config needs "
            f"{[d.name.lower() for d in wanted]}; use another --study name"
        )
    stored = dict(existing.user_attrs.get(ATTR, {}))
    differing = sorted(
        key for key in attrs if key not in UNCOMPARED
        and json.dumps(stored.get(key), sort_keys=True) != json.dumps(attrs[key], sort_keys=True)
    )  # fmt: skip
    if differing:
        key = differing[0]
        raise TabslimInputError(
            f"study '{name}' in {storage_label} was made with a different {key} "
            f"({json.dumps(stored.get(key))} there, {json.dumps(attrs[key])} in this config); "
            "use another --study name to search a new space"
        )
    return existing, True
