"""After a search: the baseline and the champion timed as served, recorded where people look.

The timing is `search.serving.time_served`'s; this module picks the two models, keeps the
figures on the study (the report prints them), and mirrors them on the study's MLflow run: one
metric per model, way and batch size, and the report artifact written again with the table.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric

from search.front import study_text
from search.serving import ServedLatency, time_served
from search.study import StudySettings, attributes
from search.tracking.study_mirror import StudyMirror

__all__ = ["record_served_latency", "served_metrics"]


def served_metrics(latencies: Sequence[ServedLatency]) -> dict[str, float]:
    """E.g. `served_champion_in_process_b1_ms`; HTTP only where it was measured."""
    metrics = {}
    for timed in latencies:
        ways = {"graph": timed.graph_ms, "in_process": timed.in_process_ms, "http": timed.http_ms}
        for way, ms in ways.items():
            if ms is not None:
                metrics[f"served_{timed.model}_{way}_b{timed.rows}_ms"] = ms
    return metrics


def record_served_latency(
    mirror: StudyMirror,
    champion_uri: str,
    rows: pd.DataFrame,
    *,
    tracking_uri: str,
    batch_sizes: Sequence[int],
    http: bool,
) -> list[ServedLatency]:
    """Time the baseline's and the champion's logged models as served, on `rows`; store and
    mirror the figures. The champion alone where it is the baseline (its URI is the
    registry's alias, the baseline's its logged model's: the URIs differ, the trial does not)."""
    study = mirror.study
    baseline = StudySettings.read(study).baseline_trial
    choice = attributes.champion_choice(study)
    models = {"champion": champion_uri}
    if baseline is not None and choice is not None and choice.trial != baseline:
        baseline_uri = mirror.model_uri(study.trials[baseline])
        if baseline_uri is not None:
            models = {"baseline": baseline_uri, "champion": champion_uri}
    ways = "in-process and over HTTP (mlflow models serve)" if http else "in-process"
    print(f"tabslim: timing {' and '.join(models)} as served, {ways}", file=sys.stderr, flush=True)
    latencies, problem = time_served(
        models, rows, tracking_uri=tracking_uri, batch_sizes=batch_sizes, http=http
    )
    attributes.write_served_latency(study, [t.to_dict() for t in latencies], problem)
    run_id = mirror.parent_run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in served_metrics(latencies).items()]
    mirror.client.log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.txt"
        report.write_text(study_text(study) + "\n")
        mirror.client.log_artifact(run_id, str(report))
    return latencies
