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

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import serving_preprocessor
from lightning_modules.metrics import HIGHER_IS_BETTER
from lightning_modules.networks import TabularNetwork
from lightning_modules.preprocessing import Preprocessor
from search import tracking
from search.commands.retrain_command import RetrainSettings
from search.commands.retrain_rows import evidence_words, fingerprint, read_new_rows, split
from search.inputs import set_training_threads
from search.measure import CONFIDENCE, paired_delta
from search.monitor import (
    ChallengerOptions,
    PromotionVerdict,
    compare,
    estimated_metric,
    frame_scores,
    latency_ratio,
    realized_metric,
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


def _champion_files(
    client: MlflowClient, name: str, tracking_uri: str
) -> tuple[Any, Path, dict, str | None]:
    """`name@champion`'s version, its network folder, the profile drift is measured from, and
    the retrain run whose rows it was last kept on (None: its training rows)."""
    champion = champion_version(client, name, tracking_uri)
    network_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}"))
    network_dir = network_dir / "artifacts" / "network"
    profile = read_profile(network_dir, f"models:/{name}@champion")
    accepted_run = dict(champion.tags or {}).get(ACCEPTED_TAG)
    if accepted_run is not None:
        profile = mlflow.artifacts.load_dict(f"runs:/{accepted_run}/{ACCEPTED_FILE}")
    return champion, network_dir, profile, accepted_run


def _drift_reasons(job: _Job, everything: pd.DataFrame, accepted_run: str | None) -> tuple:
    """The new rows compared with the champion's profile, and the reasons to retrain (none:
    no retrain is called for)."""
    network_dir, profile, settings = job.network_dir, job.profile, job.settings
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
            f"{job.champion.version} was kept (tag {ACCEPTED_TAG})"
        )
    return report, reasons


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
    champion, network_dir, profile, accepted_run = _champion_files(client, name, tracking_uri)
    everything, frame, unlabelled, too_few = read_new_rows(
        data_path, target, profile, network_dir, settings.holdout, settings.time_column
    )
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
        fingerprint(data_path, target, settings.time_column),
        unlabelled,
    )
    done = client.get_registered_model(name).tags.get(_DONE_TAG + job.fingerprint)
    if done is not None:
        return job.outcome("already done", [f"this data was handled before: {done}"])
    report, reasons = _drift_reasons(job, everything, accepted_run)
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
            return _no_retrain(job, report, run.info.run_id)
        set_training_threads(config)
        spec, network, prep = load_network(job.network_dir)
        window, rows = split(job.frame, settings.holdout, settings.time_column, config.data.seed)
        # The champion as it is, before any challenger trains.
        base = (frame_scores(network, prep, rows, job.target), _size(network))
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
        evidence = evidence_words(
            settings.time_column, len(window), len(rows), job.unlabelled, report.estimated
        )
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
        passing = _judge(job, challengers, rows, network, base, confidence, lines)
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


def _size(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def _no_retrain(job: _Job, report: Any, run_id: str) -> RetrainOutcome:
    """Record on the run and the registered model that this data called for no retrain."""
    mlflow.set_tag("tabslim.outcome", "no retrain")
    job.client.set_registered_model_tag(job.name, _DONE_TAG + job.fingerprint, "no retrain")
    outcome = job.outcome(
        "no retrain", ["no drift or loss beyond the thresholds"], report.summary()
    )
    outcome.run_id = run_id
    return outcome


def _judge(
    job: _Job,
    challengers: dict[str, tuple[nn.Module, Preprocessor, TabularDataModule]],
    rows: pd.DataFrame,
    network: nn.Module,
    base: tuple[Any, int],
    confidence: float,
    lines: list[str],
) -> list:
    """Each challenger judged against the champion (`network`, with its per-row scores on the
    holdout `rows` and its size, `base`) in a nested run; a line each goes to `lines`. Those
    that pass are logged as models and returned."""
    config, settings = job.config, job.settings
    base_rows, base_size = base
    metric = job.profile["validation"]["metric"]
    higher = HIGHER_IS_BETTER[metric]
    passing = []
    for kind, (candidate, cand_prep, data) in challengers.items():
        scores = frame_scores(candidate, cand_prep, rows, job.target)
        delta = paired_delta(
            scores, base_rows, metric, seed=config.search.seed, confidence=confidence
        )
        size = _size(candidate) / base_size
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
    return passing


def _accept_rows(job: _Job, network: nn.Module, prep: Preprocessor, run_id: str) -> str:
    """Make the new rows the champion's drift reference (`profile.accepted_profile`)."""
    frame, target = job.frame, job.target
    if prep.task.is_classification and not set(frame[target].astype("string")) <= set(
        map(str, prep.classes)
    ):
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
