"""`tabslim report`: a study's front as a table relative to its baseline."""

from __future__ import annotations

import optuna

from lightning_modules.errors import TabslimInputError
from search import pareto
from search.study import ATTR, DEFAULT_STORAGE, open_storage


def study_report(name: str, storage_url: str | None) -> str:
    label = storage_url or str(DEFAULT_STORAGE)
    if storage_url is None and not DEFAULT_STORAGE.exists():
        raise TabslimInputError(f"no study '{name}': the default storage {label} does not exist")
    storage = open_storage(storage_url)
    names = [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise TabslimInputError(f"no study '{name}' in {label}; studies there: {known}")
    study = optuna.load_study(study_name=name, storage=storage)
    metric = study.user_attrs.get(ATTR, {}).get("metric", "metric")
    return pareto.format_report(pareto.trial_table(study), metric=metric)
