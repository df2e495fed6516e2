"""`tabslim drift`: new rows against the reference profile a logged model carries.

First a data-quality section (`search.monitor.quality`: per column the values that do not parse
as the training type, missing, beyond the training range, unseen categories; broken columns
named), logged as metrics `quality_<share>_<column>` and the table `data_quality.json`. Then
prints the columns worst first and logs one MLflow run (`tabslim.kind = drift`) with the report
as JSON and HTML, the figure, a metric per column (`drift_psi_<column>`), the classifier
two-sample test's AUC against the training rows stored with the model (`drift_c2st_auc`, with
`_ci_low` and `_ci_high`), the metric estimated on the rows without labels
(`estimated_<metric>`, with `_ci_low` and `_ci_high`) and the one realized on labelled rows
(`realized_<metric>`), and tags that link the run to the model (and to its registered version,
which gets a tag back to the run).
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from lightning_modules.errors import TabslimInputError
from lightning_modules.tables import read_table
from search import tracking
from search.commands.models import network_folder
from search.config import DEFAULT_TRACKING_URI
from search.config.choices import DRIFT_ALPHA, DRIFT_PSI_THRESHOLD
from search.monitor import (
    NO_REFERENCE_ROWS,
    DataQuality,
    DriftReport,
    check_quality,
    coerced_target,
    compare,
    estimate_note,
    estimated_metric,
    multivariate_drift,
    plot_drift,
    realized_metric,
    render_html,
    screen_estimate,
    served_frame,
    served_predictions,
    unlabelled,
)
from search.serving import read_profile

__all__ = ["DriftOutcome", "run_drift"]

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass
class DriftOutcome:
    report: DriftReport
    run_id: str
    tracking_uri: str


def _metric_name(column: str) -> str:
    # MLflow metric names take letters, digits and _-. /; the rest becomes _.
    return "drift_psi_" + re.sub(r"[^A-Za-z0-9_\-. /]", "_", column)


def _labels(labels_path: str, target: str, rows: int, data_path: str) -> pd.Series:
    """The target column of `labels_path`, row for row with the `rows` rows of `data_path`."""
    labels = read_table(labels_path)
    if target not in labels.columns:
        raise TabslimInputError(f"{labels_path} has no column {target!r}, the model's target")
    if len(labels) != rows:
        raise TabslimInputError(
            f"{labels_path} has {len(labels)} rows but {data_path} has {rows}; --labels must "
            "hold the target of each row of --data, in the same order"
        )
    return labels[target].reset_index(drop=True)


def _read_rows(
    model_uri: str,
    data_path: str,
    labels_path: str | None,
    network_dir: Path,
    profile: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The new rows as the estimate reads them (features; the target too when `data_path` has
    it), and the same rows with their labels coerced to the model's (raises on bad input)."""
    frame = read_table(data_path)
    missing = [c for c in profile["columns"] if c not in frame.columns]
    if missing:
        raise TabslimInputError(
            f"{data_path} lacks the columns {missing}, which model {model_uri} takes"
        )
    if frame.empty:
        raise TabslimInputError(f"{data_path} has no rows to compare")
    if labels_path is None:
        labelled = frame = coerced_target(frame, profile["target"], network_dir, data_path)
    else:
        actual = _labels(labels_path, profile["target"], len(frame), data_path)
        # The estimate reads the features alone, as if no row were labelled.
        frame = frame.drop(columns=profile["target"], errors="ignore")
        labelled = coerced_target(
            frame.assign(**{profile["target"]: actual.to_numpy()}),
            profile["target"],
            network_dir,
            labels_path,
        )
    return frame, labelled


def _drift_report(
    profile: dict[str, Any],
    network_dir: Path,
    frame: pd.DataFrame,
    labelled: pd.DataFrame,
    *,
    psi_threshold: float,
    alpha: float,
) -> tuple[DriftReport, DataQuality]:
    """The rows' quality, per-column and multivariate drift, and the realized and estimated
    metric, in one report."""
    served = served_frame(network_dir, frame)
    predictions = served_predictions(served, profile)
    realized = realized_metric(profile, labelled, predictions)
    # Before any distribution is compared: a broken column's values are mostly imputations.
    quality = check_quality(profile, frame)
    report = compare(
        profile,
        frame,
        predictions=predictions,
        realized=realized,
        psi_threshold=psi_threshold,
        alpha=alpha,
        quality=quality,
    )
    # Per-column tests miss a change in how columns vary together; this test sees it.
    report.multivariate = multivariate_drift(network_dir, profile, frame)
    if report.multivariate is None:
        report.multivariate_note = NO_REFERENCE_ROWS
    estimated = estimated_metric(profile, network_dir, frame, served)
    report.estimated, withheld = screen_estimate(quality, estimated, unlabelled(profile, frame))
    report.estimated_note = withheld or estimate_note(profile, frame)
    return report, quality


def _run_tags(
    client: MlflowClient, model_uri: str, data_path: str, labels_path: str | None
) -> tuple[re.Match[str] | None, str | None, dict[str, str]]:
    """The registered model `model_uri` names (if it does), its version, and the run's tags."""
    match = _ALIAS_URI.match(model_uri)
    version = None
    if match and match["alias"]:
        version = client.get_model_version_by_alias(match["name"], match["alias"]).version
    elif match:
        version = match["version"]
    tags = {"tabslim.kind": "drift", "tabslim.model_uri": model_uri, "tabslim.data": data_path}
    if labels_path is not None:
        tags["tabslim.labels"] = labels_path
    if match and version is not None:
        tags |= {"tabslim.model_name": match["name"], "tabslim.model_version": str(version)}
    return match, version, tags


def _drift_metrics(report: DriftReport) -> dict[str, float]:
    """The report's figures as MLflow metrics: per-column PSI, shares, scores, intervals."""
    metrics = {_metric_name(c.column): c.psi for c in report.columns if math.isfinite(c.psi)}
    metrics |= {
        "drift_share": report.share_drifted,
        "drift_score": report.score,
        "drift_prediction_psi": report.prediction_psi,
    }
    if report.realized is not None:
        metrics |= {
            f"realized_{report.realized.metric}": report.realized.value,
            f"realized_{report.realized.metric}_ci_low": report.realized.low,
            f"realized_{report.realized.metric}_ci_high": report.realized.high,
        }
    estimated = report.estimated
    if estimated is not None:
        metrics |= {
            f"estimated_{estimated.metric}": estimated.value,
            f"estimated_{estimated.metric}_ci_low": estimated.low,
            f"estimated_{estimated.metric}_ci_high": estimated.high,
            "estimated_rows_outside_range": estimated.outside,
        }
    found = report.multivariate
    if found is not None and math.isfinite(found.auc):
        metrics |= {
            "drift_c2st_auc": found.auc,
            "drift_c2st_auc_ci_low": found.low,
            "drift_c2st_auc_ci_high": found.high,
        }
    return metrics


def run_drift(
    model_uri: str,
    data_path: str,
    *,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    experiment: str = "tabslim",
    psi_threshold: float = DRIFT_PSI_THRESHOLD,
    alpha: float = DRIFT_ALPHA,
    labels_path: str | None = None,
) -> DriftOutcome:
    """Compare `data_path`'s rows with `model_uri`'s profile; log and return the report.

    Rows without the target get the metric estimated from their features; with `labels_path`
    (the target of each row, in order) every row gets both the estimate, made as if its label
    were unknown, and the realized metric beside it. All input (model, its profile, the tables
    and their columns) is checked before anything is logged.
    """
    if not (psi_threshold > 0 and 0 < alpha < 1):
        raise TabslimInputError(
            f"--psi-threshold must be above 0 and --alpha in (0, 1), but got "
            f"{psi_threshold=} and {alpha=}"
        )
    experiment_id = tracking.configure(tracking_uri, experiment)
    network_dir = network_folder(model_uri, tracking_uri)
    profile = read_profile(network_dir, model_uri)
    frame, labelled = _read_rows(model_uri, data_path, labels_path, network_dir, profile)
    report, quality = _drift_report(
        profile, network_dir, frame, labelled, psi_threshold=psi_threshold, alpha=alpha
    )
    client = MlflowClient()
    match, version, tags = _run_tags(client, model_uri, data_path, labels_path)
    with mlflow.start_run(experiment_id=experiment_id, run_name="drift", tags=tags) as run:
        metrics = _drift_metrics(report)
        mlflow.log_metrics(metrics | quality.metrics())
        mlflow.log_table(quality.table(), "data_quality.json")
        mlflow.log_dict(report.to_dict(), "drift_report.json")
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_drift(report, profile, frame, Path(tmp) / "drift.png")
            mlflow.log_artifact(str(png))
            mlflow.log_text(render_html(report, f"Drift of {model_uri}", png), "drift_report.html")
    if match and version is not None:
        client.set_model_version_tag(
            match["name"], str(version), "tabslim.last_drift_run", run.info.run_id
        )
    return DriftOutcome(report, run.info.run_id, tracking_uri)
