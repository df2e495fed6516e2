"""Where trials keep their networks, so that any node can read any trial's.

Each trial saves its network (spec, weights, preprocessing, row scores) to a local folder and
records the files' SHA-256 on the trial. With an MLflow tracking server (`--tracking-uri
http://...`), the folder is also uploaded as artifacts of the study's parent run, under
`networks/trial-N/`: a worker on another node, with no disk in common, downloads the baseline
from there for its prune trials, caches it, and checks the digests. With the local default (a
SQLite tracking store), the folder under `mlruns/studies/` is all there is, as before.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna

from lightning_modules.errors import TabslimInputError

__all__ = ["DIGESTS_ATTR", "RemoteNetworks", "digests", "fetch", "is_server", "publish"]

# The trial user attribute holding {file name: sha256} of the trial's saved network.
DIGESTS_ATTR = "network_sha256"
_ARTIFACT_ROOT = "networks"


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


@dataclass(frozen=True)
class RemoteNetworks:
    """The study's parent run on an MLflow tracking server, which holds every trial's files."""

    tracking_uri: str
    run_id: str

    def upload(self, directory: Path, number: int) -> None:
        # Imported here: the key above is read by every study module, most of which never
        # talk to a tracking server.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        client.log_artifacts(self.run_id, str(directory), f"{_ARTIFACT_ROOT}/trial-{number}")

    def download(self, number: int, destination: Path) -> None:
        import mlflow

        with tempfile.TemporaryDirectory(dir=destination.parent) as tmp:
            fetched = mlflow.artifacts.download_artifacts(
                run_id=self.run_id,
                artifact_path=f"{_ARTIFACT_ROOT}/trial-{number}",
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
            )
            # Moved into place whole, so that a half-downloaded folder is never read.
            shutil.rmtree(destination, ignore_errors=True)
            shutil.move(fetched, destination)


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def publish(trial: optuna.Trial, directory: Path, remote: RemoteNetworks | None) -> None:
    """Record the digests of a saved trial's files, and upload them when there is a server."""
    if remote is not None:
        remote.upload(directory, trial.number)
    trial.set_user_attr(DIGESTS_ATTR, digests(directory))


def fetch(study: optuna.Study, number: int, folder: Path, remote: RemoteNetworks | None) -> Path:
    """The folder of trial `number`'s network on this node: the local copy when its digests
    match, else downloaded from the server (and cached in `folder`)."""
    directory = folder / f"trial-{number}"
    expected = study._storage.get_trial(  # noqa: SLF001 - one trial, without copying all
        study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)  # noqa: SLF001
    ).user_attrs.get(DIGESTS_ATTR)
    if directory.is_dir() and (expected is None or digests(directory) == expected):
        return directory
    if remote is None:
        raise TabslimInputError(
            f"the network of trial {number} is not in {folder}: with no disk shared between "
            "nodes, give the study an MLflow tracking server (--tracking-uri http://HOST:PORT)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    remote.download(number, directory)
    if expected is not None and digests(directory) != expected:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(
            f"the network of trial {number} downloaded from run {remote.run_id} does not match "
            "the digests its trial recorded"
        )
    return directory
