"""MLflow setup: the SQLite store under mlruns/ and artifacts beside it.

MLflow 3 refuses the old `./mlruns` file store, so runs go to `sqlite:///mlruns/mlflow.db` and
artifacts to `mlruns/artifacts`, both under the folder the user works in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from lightning_modules.errors import TabslimInputError


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: `artifacts/` beside a SQLite store."""
    path = _sqlite_path(uri)
    return (path.parent / "artifacts").resolve().as_uri() if path is not None else None


def configure(uri: str, experiment: str) -> str:
    """Point MLflow at `uri` and `experiment` (created if new); returns the experiment id."""
    path = _sqlite_path(uri)
    if path is not None:
        if path.exists() and not path.is_file():
            raise TabslimInputError(f"tracking store '{path}' exists but is not a file")
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not uri.startswith(("http://", "https://", "postgresql", "mysql", "databricks")):
        raise TabslimInputError(
            f"tracking uri must be sqlite:///PATH or an MLflow server URL, but got {uri!r}"
        )
    # Artifact up/downloads are local and quick; their progress bars only clutter the output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:  # noqa: BLE001 - any store failure is one line for the user
        raise TabslimInputError(f"cannot reach tracking store {uri!r}: {error}") from None
    if found is not None:
        experiment_id = found.experiment_id
    else:
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_root(uri))
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested config -> {"training.lr": 0.001, ...}, the shape MLflow params take."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: value}


def find_study_run(client: MlflowClient, experiment_id: str, study: str) -> str | None:
    """The id of the parent run that mirrors `study` in the experiment, or None."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`tabslim.study` = '{study}' and tags.`tabslim.kind` = 'study'",
        max_results=1,
    )
    return found[0].info.run_id if found else None
