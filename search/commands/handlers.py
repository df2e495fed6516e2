"""What each `tabslim` command does with its parsed arguments; `search.commands.cli` parses them.

Each handler imports its job lazily, so that `tabslim --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from lightning_modules.errors import TabslimInputError
from search.cluster import redact


def _config_from(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from search.config import load_config, override

    config = load_config(args.config)
    if args.data is not None and args.target is None and config.data.path is None:
        raise TabslimInputError("--data needs --target COLUMN: the column to predict")
    return override(
        config,
        "from the command line",
        **{
            "data.path": args.data,
            "data.dataset": args.dataset,
            "data.target": args.target,
            "data.task": args.task,
            "data.drop_columns": [c for c in args.drop_columns.split(",") if c]
            if args.drop_columns
            else None,
            "data.time_column": args.time_column,
            "data.seed": args.seed,
            "training.seed": args.seed,
            "training.max_epochs": args.max_epochs,
            "tracking.uri": args.tracking_uri,
            "tracking.experiment": args.experiment,
        },
    )


def train_command(args: argparse.Namespace) -> int:
    from search.commands.train import run_train

    config = _config_from(args)
    # Lightning's per-step bar is for a terminal; in a log file it is thousands of lines.
    outcome = run_train(config, progress_bar=not args.quiet and sys.stdout.isatty())
    tracking = config.tracking
    print(f"run {outcome.run_id} in experiment '{tracking.experiment}' at {redact(tracking.uri)}")
    for name, value in sorted(outcome.metrics.items()):
        print(f"  {name:<44} {value:.6g}")
    print(f"model: {outcome.model_uri}  (mlflow.pyfunc.load_model(uri).predict(raw_rows))")
    return 0


def search_command(args: argparse.Namespace) -> int:
    from search.commands.search import run_search
    from search.config import override

    config = override(
        _config_from(args),
        "from the command line",
        **{
            "search.n_trials": args.n_trials,
            "search.timeout": args.timeout,
            "search.study": args.study,
            "search.storage": args.storage,
            "search.workers": args.workers,
            "search.devices": args.devices,
            "search.workers_per_device": args.workers_per_device,
            "search.seed": args.seed,
            "search.sampler": args.sampler,
        },
    )
    outcome = run_search(config, progress=not args.quiet)
    print(outcome.report)
    print(
        f"study '{outcome.study}' in {outcome.storage}: {outcome.trials} trials, "
        f"front of {outcome.front_size}; MLflow parent run {outcome.parent_run_id} "
        f"at {redact(config.tracking.uri)}"
    )
    if outcome.champion_uri is None:
        print(f"no champion was registered: {outcome.champion_note or 'nothing finished'}")
    else:
        print(f"champion: {outcome.champion_uri} ({outcome.champion_note})")
    if config.tracking.uri.startswith("sqlite:///"):
        # MLflow 3.17's UI opens experiments in its GenAI view unless the URL asks otherwise.
        print(
            f"look at it: mlflow ui --backend-store-uri {config.tracking.uri}, then open "
            f"http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs"
            "?workflowType=machine_learning"
        )
    return 0


def worker_command(args: argparse.Namespace) -> int:
    from search.commands.worker import run_workers

    outcomes = run_workers(
        args.study,
        args.storage,
        devices=args.devices or "auto",
        workers_per_device=args.workers_per_device,
        tracking_uri=args.tracking_uri,
        data_path=args.data,
    )
    for outcome in outcomes:
        print(
            f"worker on study '{outcome.study}' (sampler seed {outcome.seed}): ran "
            f"{outcome.ran} trials; the study has {outcome.complete} of {outcome.target} complete"
        )
    return 0


def drift_command(args: argparse.Namespace) -> int:
    from search.commands.drift import run_drift
    from search.config import DEFAULT_TRACKING_URI

    outcome = run_drift(
        args.model,
        args.data,
        tracking_uri=args.tracking_uri or DEFAULT_TRACKING_URI,
        psi_threshold=args.psi_threshold,
        alpha=args.alpha,
    )
    print(outcome.report.format_table())
    print(f"MLflow run {outcome.run_id} at {redact(outcome.tracking_uri)}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from search.front import study_report

    print(study_report(args.study, args.storage))
    return 0


def sensitivity_command(args: argparse.Namespace) -> int:
    from search.commands.sensitivity import run_sensitivity

    try:
        ratios = [float(part) for part in args.ratios.split(",")]
        epochs = [int(part) for part in args.epochs.split(",")]
    except ValueError:
        raise TabslimInputError(
            "--ratios and --epochs take comma-separated numbers (like 0.25,0.5 and 0,1), "
            f"but got --ratios {args.ratios!r} --epochs {args.epochs!r}"
        ) from None
    outcome = run_sensitivity(
        args.study,
        args.storage,
        ratios=ratios,
        criterion=args.criterion,
        fine_tune_epochs=epochs,
        tracking_uri=args.tracking_uri,
    )
    result = outcome.result
    print(result.format_table())
    print()
    print(f"layer order, least to most sensitive: {','.join(map(str, result.order))}")
    where = (
        f"nested under study run {outcome.parent_run_id}"
        if outcome.parent_run_id
        else "no parent run for the study in this store"
    )
    print(f"MLflow run {outcome.run_id} ({where}) at {redact(outcome.tracking_uri)}")
    return 0


def retrain_command(args: argparse.Namespace) -> int:
    from search.commands.retrain import run_retrain

    outcome = run_retrain(
        args.model,
        args.data,
        args.target,
        tracking_uri=args.tracking_uri,
        time_column=args.time_column,
        config_path=args.config,
        dry_run=args.dry_run,
        force=args.force,
        holdout=args.holdout,
        min_gain=args.min_gain,
        tolerance=args.tolerance,
        drift_threshold=args.drift_threshold,
        reference_share=args.reference_share,
        search_trials=args.search,
    )
    for line in outcome.lines:
        print(line)
    print(f"{outcome.action}: {'; '.join(outcome.reasons)}")
    print(f"{args.model}@champion is version {outcome.champion}")
    if outcome.run_id:
        print(f"MLflow run {outcome.run_id}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from search import tracking
    from search.config import DEFAULT_TRACKING_URI
    from search.tracking import rollback

    uri = args.tracking_uri or DEFAULT_TRACKING_URI
    tracking.configure(uri, "tabslim")
    before, after = rollback(MlflowClient(), args.model, uri)
    print(
        f"{args.model}@champion moved back from version {before} to version {after}; "
        f"{args.model}@previous is now version {before}"
    )
    return 0
