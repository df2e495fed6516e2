"""MLflow setup: the SQLite store under mlruns/ and artifacts beside it.

MLflow 3 refuses the old `./mlruns` file store, so runs go to `sqlite:///mlruns/mlflow.db` and
artifacts to `mlruns/artifacts`, both under the folder the user works in.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source, resolve_dataset_source
from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from lightning_modules.data import TabularDataModule
from lightning_modules.datasets import load_bundled
from lightning_modules.errors import TabslimInputError
from search.config import DataConfig

# The experiment kind MLflow gives model-training experiments (the other is GenAI: traces and
# prompts, no run table). MLflow UIs that read it open the run table; 3.17.2's UI instead
# follows its sidebar switch, which `?workflowType=machine_learning` in the URL sets.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: `artifacts/` beside a SQLite store."""
    path = _sqlite_path(uri)
    return (path.parent / "artifacts").resolve().as_uri() if path is not None else None


def _check_server(uri: str, timeout: float = 10.0) -> None:
    """A one-line error at once for a server that does not answer: MLflow's own client retries
    a refused connection for minutes before it gives up."""
    parts = urllib.parse.urlsplit(uri)
    # Credentials stay out of the probe's URL; MLflow sends them itself, from its variables.
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    health = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered: an auth wall or a proxy; MLflow's own calls will say more
    except OSError as error:
        reason = getattr(error, "reason", error)
        raise TabslimInputError(
            f"cannot reach the MLflow tracking server {uri!r}: {reason}; is `mlflow server` "
            "running there?"
        ) from None


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
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
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
        # Experiments made by tabslim before the tag existed, or by hand; a kind someone chose
        # on purpose is left alone.
        if EXPERIMENT_KIND_TAG not in found.tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    else:
        experiment_id = client.create_experiment(
            experiment,
            artifact_location=artifact_root(uri),
            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
        )
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


class BundledSource(DatasetSource):
    """A table bundled with tabslim, as `sklearn:wine` or `tabslim:synthetic_regression`.

    MLflow resolves paths and URLs to sources, but has none for data generated in-process.
    """

    def __init__(self, uri: str, seed: int = 0) -> None:
        self.uri = uri
        self.seed = seed

    @staticmethod
    def _get_source_type() -> str:
        return "tabslim_bundled"

    def load(self) -> pd.DataFrame:
        return load_bundled(self.uri.partition(":")[2], seed=self.seed)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith(("sklearn:", "tabslim:"))

    @classmethod
    def _resolve(cls, raw_source: Any) -> BundledSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "seed": self.seed}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> BundledSource:
        return cls(str(source_dict["uri"]), int(source_dict.get("seed", 0)))


# So that `mlflow.data.get_source` reads logged bundled sources back in this process. MLflow
# registers the classes themselves, though its annotation asks for an instance.
register_dataset_source(BundledSource)  # type: ignore[arg-type]


def training_dataset(data: TabularDataModule, config: DataConfig) -> DatasetInput:
    """The training split of `data` as an MLflow training input, named after its source.

    Build it once and log it to many runs: the digest and schema are computed here.
    """
    if config.path is not None:
        name = Path(config.path).stem
        # Both of MLflow's local-file sources (schemes "" and "file") match a path; either
        # gives the same {"uri": path}, so its warning that it had to choose says nothing.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            source: DatasetSource = resolve_dataset_source(str(Path(config.path).resolve()))
    else:
        assert config.dataset is not None, "config validation guarantees a source"
        name = config.dataset
        # The synthetic tables are generated by tabslim from the split seed, the others ship
        # inside scikit-learn.
        origin = "tabslim" if name.startswith("synthetic_") else "sklearn"
        source = BundledSource(f"{origin}:{name}", seed=config.seed)
    frame = data.train_frame
    with warnings.catch_warnings():
        # MLflow's schema inference warns that integer columns cannot hold missing values at
        # inference time (a model-signature concern), and its digest trips a pandas 4
        # deprecation; neither concerns a logged dataset.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", pd.errors.PandasDeprecationWarning)
        sampled = from_pandas(
            _schema_sample(frame),
            source=source,
            targets=data.target,
            name=name,
            digest=_digest(frame),
        )._to_mlflow_entity()
    # The profile counts the whole split, as MLflow's own would.
    entity = Dataset(
        name=sampled.name,
        digest=sampled.digest,
        source_type=sampled.source_type,
        source=sampled.source,
        schema=sampled.schema,
        profile=json.dumps({"num_rows": len(frame), "num_elements": int(frame.size)}),
    )
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


# MLflow infers a logged dataset's schema, and finds its digest's string columns, with a Python
# call per cell: 60 s on a 1M-row table. A seeded sample of this many rows gives the same schema
# for any column that keeps one type (a pandas dtype does, and so do the columns read from a
# CSV or Parquet file), and a frame this small is read whole, as MLflow reads it.
_SCHEMA_ROWS = MAX_ROWS


def _schema_sample(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) <= _SCHEMA_ROWS:
        return frame
    return frame.sample(n=_SCHEMA_ROWS, random_state=0)


def _digest(frame: pd.DataFrame) -> str:
    """MLflow's pandas digest (its first `MAX_ROWS` rows, the row count and the column names),
    with the string columns found from those rows rather than from every cell."""
    head = frame.head(MAX_ROWS)
    strings = head.columns[(head.map(type) == str).all(0)]  # noqa: E721 - elementwise, as in MLflow
    hashed = head[strings.union(head.select_dtypes(include=[np.number]).columns)]
    return get_normalized_md5_digest(
        [pd.util.hash_pandas_object(hashed).values, np.int64(len(frame))]
        + [str(c).encode() for c in frame.columns]
    )


def log_dataset(client: MlflowClient, run_id: str, dataset: DatasetInput) -> bool:
    """Link `dataset` to the run unless the run has it already; returns whether it logged.

    A resumed search reopens its parent run, which must not list its data twice.
    """
    inputs = client.get_run(run_id).inputs
    logged = inputs.dataset_inputs if inputs is not None else []
    key = (dataset.dataset.name, dataset.dataset.digest)
    if any((d.dataset.name, d.dataset.digest) == key for d in logged):
        return False
    client.log_inputs(run_id, datasets=[dataset])
    return True
