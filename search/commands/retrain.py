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
from mlflow.tracking import MlflowClient
from torch import nn

from lightning_modules.columns import time_order
from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import serving_preprocessor
from lightning_modules.metrics import HIGHER_IS_BETTER
from lightning_modules.networks import TabularNetwork
from lightning_modules.preprocessing import Preprocessor
from lightning_modules.tables import read_table
from search import tracking
from search.commands.retrain_command import RetrainSettings
from search.inputs import set_training_threads
from search.measure import CONFIDENCE, paired_delta
from search.monitor import (
    ChallengerOptions,
    PromotionVerdict,
    check_quality,
    coerced_target,
    compare,
    estimated_metric,
    frame_scores,
    latency_ratio,
    realized_metric,
    refuse_broken,
    retrain_reasons,
    served_change,
    served_frame,
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
from search.tracking import Busy, champion_version, promote, retrain_lock

__all__ = ["RetrainOutcome", "run_retrain"]

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


def _split(frame: pd.DataFrame, holdout: float, time_column: str | None, seed: int) -> tuple:
    n_holdout = round(len(frame) * holdout)
    if time_column is not None:
        ordered = frame.iloc[time_order(frame, time_column).argsort(kind="stable").to_numpy()]
    else:
        ordered = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
    return ordered.iloc[: len(frame) - n_holdout], ordered.iloc[len(frame) - n_holdout :]


def _check_input(frame: pd.DataFrame, profile: dict, target: str) -> None:
    if target not in frame.columns and target != profile["target"]:
        raise TabslimInputError(
            f"the new data has no target column {target!r}; the champion predicts "
            f"{profile['target']!r}, whose rows may come unlabelled"
        )
    missing = [c for c in profile["columns"] if c not in frame.columns]
    if missing:
        raise TabslimInputError(f"the new data lacks the columns {missing}, which the model takes")


def _labelled_too_few(labelled: int, holdout: float) -> str | None:
    """Why `labelled` rows cannot train and judge challengers; None when they can."""
    if round(labelled * holdout) < _MIN_HOLDOUT_ROWS or labelled - round(labelled * holdout) < 60:
        return (
            f"{labelled} labelled rows are too few for a holdout of {holdout:g} (it needs "
            f"{_MIN_HOLDOUT_ROWS} rows, and the window at least 60)"
        )
    return None


@dataclass
class _Job:
    """One retrain of `name@champion` on one table: what every step reads."""

    name: str
    data_path: str
    target: str
    settings: RetrainSettings
    config: Any
    client: MlflowClient
    champion: Any
    network_dir: Path
    profile: dict
    # The labelled new rows: challengers train on their window and are judged on the rest.
    frame: pd.DataFrame
    fingerprint: str
    # New rows without their labels yet, judged by the estimated metric only.
    unlabelled: int = 0

    def outcome(self, action: str, reasons: list[str], lines: list[str] | None = None) -> Any:
        return RetrainOutcome(action, reasons, self.champion.version, lines or [])


def run_retrain(
    name: str,
    data_path: str,
    target: str,
    settings: RetrainSettings | None = None,
    **options: Any,
) -> RetrainOutcome:
    """Retrain `name@champion` on `data_path` if it needs it; see the module docstring.

    `settings`, or the same as keyword arguments (`tracking_uri=`, `force=`, ...).
    """
    settings = settings or RetrainSettings.of(**options)
    config = settings.training_config()  # the config, with --max-epochs and the like
    # The flag, else the config's store (`--config` may name a team server).
    tracking_uri = settings.tracking_uri or config.tracking.uri
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
    everything = read_table(data_path)
    _check_input(everything, profile, target)
    # Before anything is trained, promoted or marked handled: a model retrained on a broken
    # column learns from the values the preprocessing imputed.
    refuse_broken(check_quality(profile, everything))
    everything = coerced_target(everything, target, network_dir, data_path)
    # Rows whose labels have not come yet are judged by the estimate alone; challengers train
    # and are judged on the labelled ones.
    if target in everything.columns:
        frame = everything[everything[target].notna()].reset_index(drop=True)
    else:
        frame = everything.iloc[:0]
    unlabelled = len(everything) - len(frame)
    too_few = _labelled_too_few(len(frame), settings.holdout)
    if too_few and not unlabelled:
        raise TabslimInputError(too_few)
    time_column = settings.time_column
    if time_column is not None:
        time_order(everything, time_column)  # a one-line error for a column that does not parse
    job = _Job(
        name,
        data_path,
        target,
        settings,
        config,
        client,
        champion,
        network_dir,
        profile,
        frame,
        _fingerprint(data_path, target, time_column),
        unlabelled,
    )
    done = client.get_registered_model(name).tags.get(_DONE_TAG + job.fingerprint)
    if done is not None:
        return job.outcome("already done", [f"this data was handled before: {done}"])
    served = served_frame(network_dir, everything)
    predictions = served_predictions(served, profile)
    report = compare(
        profile,
        everything,
        predictions=predictions,
        realized=realized_metric(profile, everything, predictions),
    )
    report.estimated = estimated_metric(profile, network_dir, everything, served)
    reasons = retrain_reasons(
        report, profile, settings.tolerance, settings.drift_threshold, settings.force
    )
    if accepted_run is not None:
        report.reference_note = (
            f"drift measured from the rows of retrain run {accepted_run}, on which version "
            f"{champion.version} was kept (tag {ACCEPTED_TAG})"
        )
    if settings.dry_run:
        action = "dry run: would retrain" if reasons else "dry run: no retrain needed"
        no_reason = ["no drift or loss beyond the thresholds"]
        return job.outcome(action, reasons or no_reason, report.summary())
    if reasons and too_few:
        # Called for, but the labels are not there yet to train a challenger: nothing changes,
        # and the same file once labelled is not taken for one already handled.
        return job.outcome("retrain needed, too few labels", reasons, [*report.summary(), too_few])
    try:
        with retrain_lock(tracking_uri, name):
            return _retrain(job, experiment_id, report, reasons)
    except Busy:
        return job.outcome("busy", [f"another retrain of {name!r} is running"])


def _retrain(job: _Job, experiment_id: str, report: Any, reasons: list[str]) -> RetrainOutcome:
    name, champion, config, settings = job.name, job.champion, job.config, job.settings
    tags = {
        "tabslim.kind": "retrain",
        "tabslim.model_name": name,
        "tabslim.champion_version": str(champion.version),
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"retrain-{name}", tags=tags
    ) as run:
        mlflow.log_dict(report.to_dict(), "drift_report.json")
        if not reasons:
            mlflow.set_tag("tabslim.outcome", "no retrain")
            job.client.set_registered_model_tag(name, _DONE_TAG + job.fingerprint, "no retrain")
            outcome = job.outcome(
                "no retrain", ["no drift or loss beyond the thresholds"], report.summary()
            )
            outcome.run_id = run.info.run_id
            return outcome
        set_training_threads(config)
        spec, network, prep = load_network(job.network_dir)
        window, rows = _split(job.frame, settings.holdout, settings.time_column, config.data.seed)
        base_rows = frame_scores(network, prep, rows, job.target)
        base_size = sum(p.numel() for p in network.parameters())
        metric = job.profile["validation"]["metric"]
        higher = HIGHER_IS_BETTER[metric]
        window = training_window(
            window,
            job.network_dir,
            settings.reference_share,
            settings.time_column,
            config.data.seed,
        )
        options = ChallengerOptions(
            settings.reference_share,
            settings.search_trials,
            front_widths(dict(champion.tags or {})),
        )
        challengers, lines = train_challengers(
            window, job.target, settings.time_column, config, (spec, network, prep), options
        )
        evidence = _evidence(job, report, len(window), len(rows))
        lines.append(evidence)
        # The best of several challengers is promoted: each interval is widened (Bonferroni)
        # so that the chance any of them clears the gain by luck stays at 2.5%.
        confidence = 1 - (1 - CONFIDENCE) / max(len(challengers), 1)
        if len(challengers) > 1:
            lines.append(
                f"each challenger's interval is {confidence:.1%} (Bonferroni over "
                f"{len(challengers)}): the best of several is promoted"
            )
        mlflow.set_tags({"tabslim.evidence": evidence, "tabslim.unlabelled_rows": job.unlabelled})
        passing = []
        for kind, (candidate, cand_prep, data) in challengers.items():
            scores = frame_scores(candidate, cand_prep, rows, job.target)
            delta = paired_delta(
                scores, base_rows, metric, seed=config.search.seed, confidence=confidence
            )
            size = sum(p.numel() for p in candidate.parameters()) / base_size
            latency = latency_ratio(candidate, network)
            verdict = PromotionVerdict.judge(delta, size, latency, metric, settings.min_gain)
            passed, figures = verdict.passed, verdict.figures()
            with mlflow.start_run(run_name=kind, nested=True):
                mlflow.log_metrics(figures)
                mlflow.set_tags({"tabslim.kind": "challenger", "tabslim.passed": str(passed)})
                if passed:
                    assert isinstance(candidate, TabularNetwork)
                    served = serving_preprocessor(candidate, data)
                    info = log_model(
                        candidate.spec,
                        candidate,
                        served,
                        data.example_rows(),
                        profile=build_profile(data, candidate),
                        reference_rows=reference_sample(data, config.tracking.reference_rows),
                    )
                    passing.append((delta.delta if higher else -delta.delta, kind, info, figures))
            lines.append(verdict.line(kind, metric, len(rows)))
        outcome = _promote(job, passing, reasons, run.info.run_id, window, evidence)
        if outcome.action == "retrained, champion kept" and not any(
            r.startswith(("realized", "estimated")) for r in reasons
        ):
            outcome.lines.append(_accept_rows(job, network, prep, run.info.run_id))
        mlflow.set_tag("tabslim.outcome", outcome.action)
        job.client.set_registered_model_tag(name, _DONE_TAG + job.fingerprint, outcome.action)
        outcome.lines = report.summary() + lines + outcome.lines
        outcome.run_id = run.info.run_id
        return outcome


def _accept_rows(job: _Job, network: nn.Module, prep: Preprocessor, run_id: str) -> str:
    """Make the new rows the champion's drift reference (`profile.accepted_profile`)."""
    frame, target = job.frame, job.target
    if prep.task not in ("regression", "anomaly") and not set(
        frame[target].astype("string")
    ) <= set(map(str, prep.classes)):
        return "the new rows hold classes the champion never saw: its drift reference stays"
    data = TabularDataModule.from_frame(
        frame,
        target,
        preprocessor=prep,
        task=prep.task,
        time_column=job.settings.time_column,
        seed=job.config.data.seed,
    )
    mlflow.log_dict(accepted_profile(job.profile, data, network, run_id), ACCEPTED_FILE)
    job.client.set_model_version_tag(job.name, job.champion.version, ACCEPTED_TAG, run_id)
    return (
        f"the champion held on these rows: later retrains measure drift from them "
        f"(version {job.champion.version} tag {ACCEPTED_TAG})"
    )


def _evidence(job: _Job, report: Any, window_rows: int, holdout_rows: int) -> str:
    """What a promotion would rest on, in words: which rows called for it, which trained the
    challengers, and which judged them."""
    where = (
        f" (ordered by {job.settings.time_column}, the holdout after the window)"
        if job.settings.time_column
        else " (a seeded random split)"
    )
    words = (
        f"challengers trained on {window_rows} labelled rows and judged, paired against the "
        f"champion, on the {holdout_rows} labelled rows of the holdout{where}"
    )
    if job.unlabelled:
        estimate = report.estimated
        judged = f"its {estimate.method} estimate" if estimate is not None else "their drift alone"
        words += (
            f"; {job.unlabelled} rows without labels yet were judged by {judged}, and train "
            "and judge nothing"
        )
    return words


def _promote(
    job: _Job,
    passing: list,
    reasons: list[str],
    run_id: str,
    window: pd.DataFrame,
    evidence: str,
) -> RetrainOutcome:
    name, champion, client = job.name, job.champion, job.client
    if not passing:
        return job.outcome("retrained, champion kept", reasons, ["no challenger cleared the gate"])
    _, kind, info, figures = max(passing, key=lambda p: p[0])
    version = mlflow.register_model(info.model_uri, name)
    for key, value in {
        "tabslim.reason": "; ".join(reasons),
        "tabslim.retrain_run": run_id,
        "tabslim.challenger": kind,
        "tabslim.window_rows": str(len(window)),
        "tabslim.data": job.data_path,
        "tabslim.gate": json.dumps(figures),
        "tabslim.evidence": evidence,
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    promotion = promote(client, name, version.version, champion.version)
    if not promotion.promoted:
        return RetrainOutcome(
            "retrained, not promoted", reasons, promotion.replaced, [promotion.note]
        )
    note = (
        f"{kind} is version {version.version}, now {name}@champion "
        f"(version {champion.version} is {name}@previous)"
    )
    changed = served_change(job.network_dir, info.model_uri)  # None: same served columns
    return RetrainOutcome(
        "promoted", reasons, version.version, [note, changed] if changed else [note]
    )
