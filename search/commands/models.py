"""The forms `--model` takes, the same in `drift`, `retrain` and `rollback`.

- `NAME`: the registered model `NAME` (its champion, where a version is needed);
- `NAME@ALIAS`: that alias of it;
- `models:/NAME@ALIAS` and `models:/NAME/VERSION`: MLflow's model URIs;
- `drift` also takes any URI MLflow downloads, such as `models:/m-...`, which `tabslim train`
  prints for a model it logged without registering.

`retrain` and `rollback` move the `champion` alias of a registered model, so they take a name
and, in a URI or `NAME@ALIAS`, only the `champion` alias. Imports nothing heavy.
"""

from __future__ import annotations

import re
from pathlib import Path

from lightning_modules.errors import TabslimInputError

__all__ = ["model_uri", "network_folder", "registered_name"]

_CHAMPION = "champion"
_NAMED = re.compile(r"^(?:models:/)?(?P<name>[^/@:]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))?$")
# A model `tabslim train` logged without registering it: `models:/m-<32 hex>`.
_LOGGED = re.compile(r"^models:/m-[0-9a-f]{32}$")


def model_uri(given: str) -> str:
    """The MLflow URI `given` names, for `drift`: a bare name is its champion."""
    if "://" in given or _LOGGED.match(given):
        return given
    found = _NAMED.match(given)
    if found is None:
        raise TabslimInputError(
            f"--model takes NAME, NAME@ALIAS, models:/NAME@ALIAS or models:/NAME/VERSION, but "
            f"got {given!r}"
        )
    if found["version"]:
        return f"models:/{found['name']}/{found['version']}"
    return f"models:/{found['name']}@{found['alias'] or _CHAMPION}"


def registered_name(given: str) -> str:
    """The registered model's name in `given`, for `retrain` and `rollback`, which work on its
    `champion` alias; a one-line error for a form that names something else."""
    found = None if _LOGGED.match(given) else _NAMED.match(given)
    if found is None or found["version"] or (found["alias"] or _CHAMPION) != _CHAMPION:
        raise TabslimInputError(
            f"--model here takes a registered model (NAME, NAME@champion or "
            f"models:/NAME@champion), whose champion alias it moves, but got {given!r}"
        )
    return found["name"]


def network_folder(uri: str, tracking_uri: str) -> Path:
    """The logged model's network folder (graph, preprocessing, profile), downloaded from the
    current tracking store; a model that is not there is one line naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from search.cluster import redact

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TabslimInputError(f"no model {uri} at {redact(tracking_uri)}: {reason}") from None
    return local / "artifacts" / "network"
