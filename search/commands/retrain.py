"""`tabslim retrain`: check the champion against new rows, retrain challengers when it needs
them, and promote one only on paired evidence from rows that come after its training window.

1. Decide: the realized metric on the new rows fell beyond a tolerance, or the drift score is
   past its threshold, or `--force`. Otherwise record "no retrain" and stop. Drift is measured
   from the champion's training data, or from the last new rows it was kept on when only the
   drift score had called for that retrain (`profile.accepted_profile`).
2. Split the new rows into a training window and a holdout after it (by `--time-column`;
   without one, a seeded random split).
3. Challengers (`search.monitor.challengers`): (a) the champion's widths trained from scratch on the
   window, preprocessing refitted there; (b) the champion fine-tuned on the window, keeping its
   preprocessing; (c) with `--search N`, a short search seeded with the champion's study front
   and bounded by its widths. With `--reference-share S` the window also holds a share S of the
   training rows stored with the champion.
4. Gate, on the holdout rows: a challenger is promoted only when the paired 95% interval of its
   metric minus the champion's clears `--min-gain`, and its size and latency are within the
   champion's budget. Promotion registers a version and moves `champion` (and `previous`).
The same data again is recognised by its fingerprint and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from lightning_modules.columns import time_order
from lightning_modules.data import TabularDataModule, read_table
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import serving_preprocessor
from lightning_modules.metrics import HIGHER_IS_BETTER
from lightning_modules.networks.base import TabularNetwork
from lightning_modules.preprocessing import Preprocessor
from search import tracking
from search.config import load_config
from search.measure import paired_delta
from search.monitor import (
    ChallengerOptions,
    Verdict,
    compare,
    latency_ratio,
    realized_metric,
    retrain_reasons,
    served_predictions,
    train_challengers,
    training_window,
)
from search.serving import (
    ACCEPTED_FILE,
    ACCEPTED_TAG,
    accepted_profile,
    build_profile,
    front_widths,
    load_network,
    log_model,
    read_profile,
    reference_sample,
)
from search.study import set_training_threads
from search.tracking import Busy, champion_version, promote, retrain_lock

__all__ = ["RetrainOutcome", "frame_scores", "run_retrain"]

_MIN_HOLDOUT_ROWS = 20
_DONE_TAG = "tabslim.retrain."


@dataclass
class RetrainOutcome:
    action: str
    reasons: list[str]
    champion: str
    lines: list[str] = field(default_factory=list)
    run_id: str | None = None

    def __post_init__(self) -> None:
        # MLflow hands out versions as ints or strings, depending on the call.
        self.champion = str(self.champion)


def _fingerprint(path: str, target: str, time_column: str | None) -> str:
    """The data and how it is read; not the champion's version, which a promotion changes."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(f"{target}|{time_column}".encode())
    return digest.hexdigest()[:16]


def frame_scores(
    network: nn.Module, prep: Preprocessor, frame: pd.DataFrame, target: str
) -> np.ndarray:
    """Per holdout row: 1/0 for a right/wrong class, the squared error (original scale), or
    for task anomaly the (anomaly score, 0/1 label) pair."""
    inputs = prep.transform(frame)
    with torch.inference_mode():
        output = network.cpu().eval()(inputs["x_num"], inputs["x_cat"])
    decoded = prep.decode(output, inputs["x_num"])
    if prep.task == "anomaly":
        positive = (frame[target].astype("string") == str(prep.classes[1])).to_numpy(float)
        return np.stack([decoded["anomaly_score"], positive], axis=1)
    predicted = decoded["prediction"]
    if prep.task == "regression":
        return (np.asarray(predicted, float) - frame[target].to_numpy(float)) ** 2
    return (pd.Series(predicted).astype("string").to_numpy()
            == frame[target].astype("string").to_numpy()).astype(float)  # fmt: skip


def _split(frame: pd.DataFrame, holdout: float, time_column: str | None, seed: int) -> tuple:
    n_holdout = round(len(frame) * holdout)
    if time_column is not None:
        ordered = frame.iloc[time_order(frame, time_column).argsort(kind="stable").to_numpy()]
    else:
        ordered = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
    return ordered.iloc[: len(frame) - n_holdout], ordered.iloc[len(frame) - n_holdout :]


def _check_input(frame: pd.DataFrame, profile: dict, target: str, holdout: float) -> None:
    if target not in frame.columns:
        raise TabslimInputError(
            f"the new data has no target column {target!r}; retraining needs it"
        )
    missing = [c for c in profile["columns"] if c not in frame.columns]
    if missing:
        raise TabslimInputError(f"the new data lacks the columns {missing}, which the model takes")
    labelled = int(frame[target].notna().sum())
    if round(labelled * holdout) < _MIN_HOLDOUT_ROWS or labelled - round(labelled * holdout) < 60:
        raise TabslimInputError(
            f"{labelled} labelled rows are too few for a holdout of {holdout:g} (it needs "
            f"{_MIN_HOLDOUT_ROWS} rows, and the window at least 60)"
        )


def run_retrain(
    name: str,
    data_path: str,
    target: str,
    *,
    tracking_uri: str | None = None,
    time_column: str | None = None,
    config_path: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    holdout: float = 0.3,
    min_gain: float = 0.0,
    tolerance: float = 0.01,
    drift_threshold: float = 0.1,
    reference_share: float = 0.0,
    search_trials: int = 0,
) -> RetrainOutcome:
    """Retrain `name@champion` on `data_path` if it needs it; see the module docstring."""
    if not (0.05 <= holdout <= 0.8 and tolerance >= 0 and drift_threshold > 0):
        raise TabslimInputError(
            f"--holdout must be in [0.05, 0.8], --tolerance at least 0 and --drift-threshold "
            f"above 0, but got {holdout=}, {tolerance=}, {drift_threshold=}"
        )
    if not (0 <= reference_share <= 1 and 0 <= search_trials <= 200):
        raise TabslimInputError(
            f"--reference-share must be in [0, 1] and --search in [0, 200], but got "
            f"{reference_share=}, {search_trials=}"
        )
    config = load_config(config_path)
    # The flag, else the config's store (`--config` may name a team server).
    tracking_uri = tracking_uri or config.tracking.uri
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    experiment_id = tracking.configure(tracking_uri, config.tracking.experiment)
    client = MlflowClient()
    champion = champion_version(client, name, tracking_uri)
    network_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}"))
    network_dir = network_dir / "artifacts" / "network"
    profile = read_profile(network_dir, f"models:/{name}@champion")
    accepted_run = dict(champion.tags or {}).get(ACCEPTED_TAG)
    if accepted_run is not None:
        profile = mlflow.artifacts.load_dict(f"runs:/{accepted_run}/{ACCEPTED_FILE}")
    frame = read_table(data_path)
    _check_input(frame, profile, target, holdout)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if time_column is not None:
        time_order(frame, time_column)  # a one-line error for a column that does not parse
    fingerprint = _fingerprint(data_path, target, time_column)
    done = client.get_registered_model(name).tags.get(_DONE_TAG + fingerprint)
    if done is not None:
        return RetrainOutcome("already done", [f"this data was handled before: {done}"],
                              champion.version)  # fmt: skip
    predictions = served_predictions(network_dir, frame, profile)
    report = compare(
        profile, frame, predictions=predictions,
        realized=realized_metric(profile, frame, predictions),
    )  # fmt: skip
    reasons = retrain_reasons(report, profile, tolerance, drift_threshold, force)
    if accepted_run is not None:
        report.reference_note = (
            f"drift measured from the rows of retrain run {accepted_run}, on which version "
            f"{champion.version} was kept (tag {ACCEPTED_TAG})"
        )
    if dry_run:
        action = "dry run: would retrain" if reasons else "dry run: no retrain needed"
        return RetrainOutcome(action, reasons or ["no drift or loss beyond the thresholds"],
                              champion.version, report.summary())  # fmt: skip
    try:
        with retrain_lock(tracking_uri, name):
            options = ChallengerOptions(
                reference_share, search_trials, front_widths(dict(champion.tags or {}))
            )
            return _retrain(
                name, frame, target, time_column, config, experiment_id, client, champion,
                network_dir, profile, report, reasons, fingerprint, holdout, min_gain, data_path,
                options,
            )  # fmt: skip
    except Busy:
        return RetrainOutcome("busy", [f"another retrain of {name!r} is running"],
                              champion.version)  # fmt: skip


def _retrain(
    name: str, frame: pd.DataFrame, target: str, time_column: str | None, config: Any,
    experiment_id: str, client: MlflowClient, champion: Any, network_dir: Path, profile: dict,
    report: Any, reasons: list[str], fingerprint: str, holdout: float, min_gain: float,
    data_path: str, options: ChallengerOptions,
) -> RetrainOutcome:  # fmt: skip
    tags = {"tabslim.kind": "retrain", "tabslim.model_name": name,
            "tabslim.champion_version": str(champion.version)}  # fmt: skip
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"retrain-{name}", tags=tags
    ) as run:
        mlflow.log_dict(report.to_dict(), "drift_report.json")
        if not reasons:
            mlflow.set_tag("tabslim.outcome", "no retrain")
            client.set_registered_model_tag(name, _DONE_TAG + fingerprint, "no retrain")
            return RetrainOutcome("no retrain", ["no drift or loss beyond the thresholds"],
                                  champion.version, report.summary(), run.info.run_id)  # fmt: skip
        set_training_threads(config)
        spec, network, prep = load_network(network_dir)
        window, rows = _split(frame, holdout, time_column, config.data.seed)
        base_rows = frame_scores(network, prep, rows, target)
        base_size = sum(p.numel() for p in network.parameters())
        metric = profile["validation"]["metric"]
        higher = HIGHER_IS_BETTER[metric]
        window = training_window(window, network_dir, options.reference_share, time_column,
                                 config.data.seed)  # fmt: skip
        challengers, lines = train_challengers(
            window, target, time_column, config, (spec, network, prep), options
        )
        passing = []
        for kind, (candidate, cand_prep, data) in challengers.items():
            delta = paired_delta(frame_scores(candidate, cand_prep, rows, target), base_rows,
                                 metric, seed=config.search.seed)  # fmt: skip
            size = sum(p.numel() for p in candidate.parameters()) / base_size
            verdict = Verdict.judge(delta, size, latency_ratio(candidate, network), metric,
                                    min_gain)  # fmt: skip
            passed, figures = verdict.passed, verdict.figures()
            with mlflow.start_run(run_name=kind, nested=True):
                mlflow.log_metrics(figures)
                mlflow.set_tags({"tabslim.kind": "challenger", "tabslim.passed": str(passed)})
                if passed:
                    assert isinstance(candidate, TabularNetwork)
                    served = serving_preprocessor(candidate, data)
                    info = log_model(
                        candidate.spec, candidate, served, data.example_rows(),
                        profile=build_profile(data, candidate),
                        reference_rows=reference_sample(data, config.tracking.reference_rows),
                    )  # fmt: skip
                    passing.append((delta.delta if higher else -delta.delta, kind, info, figures))
            lines.append(verdict.line(kind, metric, len(rows)))
        outcome = _promote(client, name, champion, passing, reasons, run.info.run_id,
                           window, data_path)  # fmt: skip
        if outcome.action == "retrained, champion kept" and not any(
            r.startswith("realized") for r in reasons
        ):
            outcome.lines.append(_accept_rows(client, name, champion, frame, target,
                                              time_column, config, (network, prep), profile,
                                              run.info.run_id))  # fmt: skip
        mlflow.set_tag("tabslim.outcome", outcome.action)
        client.set_registered_model_tag(name, _DONE_TAG + fingerprint, outcome.action)
        outcome.lines = report.summary() + lines + outcome.lines
        outcome.run_id = run.info.run_id
        return outcome


def _accept_rows(
    client: MlflowClient, name: str, champion: Any, frame: pd.DataFrame, target: str,
    time_column: str | None, config: Any, served: tuple[nn.Module, Preprocessor],
    profile: dict, run_id: str,
) -> str:  # fmt: skip
    """Make the new rows the champion's drift reference (`profile.accepted_profile`)."""
    network, prep = served
    if prep.task not in ("regression", "anomaly") and not set(
        frame[target].astype("string")
    ) <= set(map(str, prep.classes)):
        return "the new rows hold classes the champion never saw: its drift reference stays"
    data = TabularDataModule.from_frame(frame, target, preprocessor=prep, task=prep.task,
                                        time_column=time_column, seed=config.data.seed)  # fmt: skip
    mlflow.log_dict(accepted_profile(profile, data, network, run_id), ACCEPTED_FILE)
    client.set_model_version_tag(name, champion.version, ACCEPTED_TAG, run_id)
    return (
        f"the champion held on these rows: later retrains measure drift from them "
        f"(version {champion.version} tag {ACCEPTED_TAG})"
    )


def _promote(
    client: MlflowClient, name: str, champion: Any, passing: list, reasons: list[str],
    run_id: str, window: pd.DataFrame, data_path: str,
) -> RetrainOutcome:  # fmt: skip
    if not passing:
        return RetrainOutcome("retrained, champion kept", reasons, champion.version,
                              ["no challenger cleared the gate"])  # fmt: skip
    _, kind, info, figures = max(passing, key=lambda p: p[0])
    version = mlflow.register_model(info.model_uri, name)
    for key, value in {
        "tabslim.reason": "; ".join(reasons), "tabslim.retrain_run": run_id,
        "tabslim.challenger": kind, "tabslim.window_rows": str(len(window)),
        "tabslim.data": data_path, "tabslim.gate": json.dumps(figures),
    }.items():  # fmt: skip
        client.set_model_version_tag(name, version.version, key, value)
    promotion = promote(client, name, version.version, champion.version)
    if not promotion.promoted:
        return RetrainOutcome("retrained, not promoted", reasons, promotion.replaced,
                              [promotion.note])  # fmt: skip
    return RetrainOutcome("promoted", reasons, version.version,
                          [f"{kind} is version {version.version}, now {name}@champion "
                           f"(version {champion.version} is {name}@previous)"])  # fmt: skip
