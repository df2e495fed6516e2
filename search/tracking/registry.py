"""The model registry side of retraining: the champion, promotion, rollback, and a lock.

`champion` names the version in service and `previous` the one it replaced, so that
`tabslim rollback` can move back. Two retrains of one model must not both promote: each holds
an OS lock beside a SQLite store for its whole run (a second one finds it taken and does
nothing), and on any store the promotion is a compare-and-set: it moves `champion` only if
`champion` still names the version the retrain started from.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lightning_modules.errors import TabslimInputError
from search.cluster import redact

__all__ = [
    "CHAMPION",
    "PREVIOUS",
    "Busy",
    "champion_version",
    "held_by_retrain",
    "promote",
    "retrain_lock",
    "rollback",
]

CHAMPION, PREVIOUS = "champion", "previous"


class Busy(Exception):
    """Another retrain of the same model holds the lock."""


def champion_version(client: MlflowClient, name: str, tracking_uri: str) -> ModelVersion:
    """The version `name@champion`, or a one-line error naming what is missing."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise TabslimInputError(f"no registered model {name!r} at {redact(tracking_uri)}") from None
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise TabslimInputError(
            f"model {name!r} has no version with the alias {CHAMPION!r}; set one with "
            "`tabslim search` or MlflowClient.set_registered_model_alias"
        ) from None


def held_by_retrain(current: ModelVersion, trial: int) -> str | None:
    """Why a search must leave `champion` on `current`: a version `tabslim retrain` promoted
    was judged on newer rows than the study's, and a re-run of the search would silently
    replace it. None when `current` is not such a version."""
    run = dict(current.tags or {}).get("tabslim.retrain_run")
    if run is None:
        return None
    return (
        f"{CHAMPION} stays on version {current.version}, which retrain run {run} promoted; "
        f"this search's trial {trial} would replace it: search again with --force to move it"
    )


@contextlib.contextmanager
def retrain_lock(tracking_uri: str, name: str) -> Iterator[None]:
    """An exclusive lock on retraining `name`, beside a SQLite store (elsewhere: none, and the
    compare-and-set in `promote` is what keeps two retrains from both promoting)."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    store = Path(tracking_uri.removeprefix("sqlite:///"))
    path = store.with_name(f"{store.name}.retrain-{name}.lock")
    with path.open("wb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(name) from None
        yield


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: str
    replaced: str
    note: str


def promote(client: MlflowClient, name: str, new_version: str, started_from: str) -> Promotion:
    """Move `champion` to `new_version` and `previous` to the old one, if `champion` still
    names `started_from`; otherwise leave both aliases and say who moved them."""
    current = client.get_model_version_by_alias(name, CHAMPION).version
    if str(current) != str(started_from):
        return Promotion(
            False,
            new_version,
            str(current),
            f"not promoted: champion moved to version {current} while this retrain ran",
        )
    client.set_registered_model_alias(name, PREVIOUS, str(started_from))
    client.set_registered_model_alias(name, CHAMPION, str(new_version))
    return Promotion(True, new_version, str(started_from), "promoted")


def rollback(client: MlflowClient, name: str, tracking_uri: str) -> tuple[str, str]:
    """`champion` back to `previous` (and `previous` to what was champion); returns (from, to)."""
    current = champion_version(client, name, tracking_uri).version
    try:
        earlier = client.get_model_version_by_alias(name, PREVIOUS).version
    except MlflowException:
        raise TabslimInputError(
            f"model {name!r} has no version with the alias {PREVIOUS!r}: nothing to roll back "
            "to (a retrain that promotes sets it)"
        ) from None
    client.set_registered_model_alias(name, CHAMPION, str(earlier))
    client.set_registered_model_alias(name, PREVIOUS, str(current))
    client.set_model_version_tag(name, str(earlier), "tabslim.rolled_back_from", str(current))
    return str(current), str(earlier)
