"""What a served call costs, for the baseline and the champion side by side.

A trial's latency objective is its served graph's `session.run` on raw columns. What a user
calls costs more: MLflow's pyfunc wrapper, its input schema check and the DataFrames in and
out, and over HTTP `mlflow models serve`'s JSON. After a search the two registered models are
timed each way on the same rows, all calls interleaved, so the report can say what the champion
saves where it is served (bench/serving.py measures the same on three real tables).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.measure import interleaved_ms
from search.measure.clock import Call
from search.serving.model_server import ServerFailed, model_server, poster

__all__ = ["SERVED_WAYS", "ServedLatency", "time_served"]

# graph: one `session.run` of the served graph (what a trial's latency timed); in_process:
# `mlflow.pyfunc.load_model(uri).predict(rows)`; http: a POST to `mlflow models serve`.
SERVED_WAYS = ("graph", "in_process", "http")


@dataclass(frozen=True)
class ServedLatency:
    """Median milliseconds per call of one model at one batch size, each way it is served;
    `http_ms` is None where HTTP was not measured."""

    model: str
    rows: int
    graph_ms: float
    in_process_ms: float
    http_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServedLatency:
        http = data.get("http_ms")
        return cls(
            model=str(data["model"]),
            rows=int(data["rows"]),
            graph_ms=float(data["graph_ms"]),
            in_process_ms=float(data["in_process_ms"]),
            http_ms=None if http is None else float(http),
        )


def _rows_of(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` rows, the given ones repeated as needed."""
    repeats = -(-n // len(rows))
    return pd.concat([rows] * repeats, ignore_index=True).head(n)


def _graph_call(model: Any, rows: pd.DataFrame) -> Call:
    """One `session.run` of the model's served graph on raw columns prepared beforehand; a
    model logged before the served graph existed has only its network behind pandas."""
    from search.serving.served_model import GraphPredictor  # loads MLflow

    predictor = model.unwrap_python_model().predictor
    if isinstance(predictor, GraphPredictor):
        feeds = predictor.preprocessor.raw_columns(rows)
        return lambda: predictor.session.run(None, feeds)
    arrays = predictor.preprocessor.transform_arrays(rows)
    feeds = {name: arrays[name] for name in predictor.input_names}
    return lambda: predictor.session.run(None, feeds)


def time_served(
    model_uris: Mapping[str, str],
    rows: pd.DataFrame,
    *,
    tracking_uri: str,
    batch_sizes: Sequence[int] = (1, 1024),
    http: bool = False,
    seconds: float = 2.0,
) -> tuple[list[ServedLatency], str | None]:
    """Each model (`label -> URI`) on `rows` repeated to each batch size, each way served.

    Returns the latencies and, where HTTP was asked for but a server failed, why; the other
    ways are still timed then.
    """
    import mlflow  # here: the stored latencies are read by modules that load no MLflow

    mlflow.set_tracking_uri(tracking_uri)
    calls: dict[tuple[str, int, str], Call] = {}
    problem = None
    with contextlib.ExitStack() as stack:
        # The server runs here: a relative store (the default sqlite:///mlruns/mlflow.db) is
        # relative to this folder.
        cwd = Path.cwd()
        for label, uri in model_uris.items():
            model = mlflow.pyfunc.load_model(uri)
            port = None
            if http and problem is None:
                try:
                    port = stack.enter_context(model_server(uri, tracking_uri, cwd))
                except ServerFailed as failed:
                    problem = str(failed)
            for n in batch_sizes:
                frame = _rows_of(rows, n)
                calls[label, n, "graph"] = _graph_call(model, frame)
                calls[label, n, "in_process"] = functools.partial(model.predict, frame)
                if port is not None:
                    calls[label, n, "http"] = poster(port, frame)
        if problem is not None:  # one model over HTTP and not the other compares nothing
            calls = {key: call for key, call in calls.items() if key[2] != "http"}
        medians = interleaved_ms(calls, max_seconds=seconds)
    latencies = [
        ServedLatency(
            model=label,
            rows=n,
            graph_ms=medians[label, n, "graph"],
            in_process_ms=medians[label, n, "in_process"],
            http_ms=medians.get((label, n, "http")),
        )
        for label in model_uris
        for n in batch_sizes
    ]
    return latencies, problem
