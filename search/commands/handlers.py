"""What each `tabslim` command does with its parsed arguments; `search.commands.cli` parses them.

Each handler checks what it can without torch, Lightning or MLflow (the arguments, the config,
that the data file is there) and only then imports its job: `tabslim --help` and a one-line
error on bad input come back in about a second.
"""

from __future__ import annotations

import argparse
import sys

from lightning_modules.errors import TabslimInputError
from lightning_modules.tables import check_table_file
from search.cluster import redact
from search.commands.models import model_uri, registered_name
from search.commands.output import fit, train_summary, worker_state
from search.commands.settings import (
    DataSettings,
    DriftSettings,
    RetrainSettings,
    SearchSettings,
    SensitivitySettings,
    WorkerSettings,
)


def _config_from(options: DataSettings):  # type: ignore[no-untyped-def]
    if options.data is not None:
        # Before the config: validating its model section imports torch (about a second).
        check_table_file(options.data)
    from search.config import load_config, override

    config = load_config(options.config)
    if options.data is not None and options.target is None and config.data.path is None:
        raise TabslimInputError("--data needs --target COLUMN: the column to predict")
    config = override(config, "from the command line", **options.overrides())
    if config.data.path is not None:
        check_table_file(config.data.path)
    return config


def train_command(args: argparse.Namespace) -> int:
    config = _config_from(DataSettings.from_args(args))
    from search.commands.train import run_train

    # Lightning's per-step bar is for a terminal; in a log file it is thousands of lines.
    outcome = run_train(config, progress_bar=not args.quiet and sys.stdout.isatty())
    tracking = config.tracking
    print(f"run {outcome.run_id} in experiment '{tracking.experiment}' at {redact(tracking.uri)}")
    if args.all_metrics:
        for name, value in sorted(outcome.metrics.items()):
            print(f"  {name:<44} {value + 0.0:.6g}")
    else:
        for line in train_summary(outcome.metrics):
            print(line)
        print(
            f"  the run's other metrics ({len(outcome.metrics)} in all: accuracy by other "
            "measures, latency spread, torch latency, seconds by phase) are in MLflow; "
            "--all-metrics prints them"
        )
    print(f"model: {outcome.model_uri}  (mlflow.pyfunc.load_model(uri).predict(raw_rows))")
    # MLflow's CLI finds the model only in the store it was logged to.
    print(
        f"from the shell: MLFLOW_TRACKING_URI={redact(tracking.uri)} mlflow models predict -m "
        f"{outcome.model_uri} -i rows.csv -t csv --env-manager local"
    )
    return 0


def search_command(args: argparse.Namespace) -> int:
    options = SearchSettings.from_args(args)
    config = _config_from(options)
    from search.config import override

    config = override(config, "from the command line", **options.search_overrides())
    from search.commands.search import run_search

    outcome = run_search(config, progress=not options.quiet, force=options.force)
    # The same count as the report's table: the searched trials and their INT8 copies.
    copies = outcome.finished - outcome.trials
    counted = f"{outcome.trials} trials" + (
        f" and {copies} INT8 cop{'ies' if copies != 1 else 'y'} ({outcome.finished} finished)"
        if copies > 0
        else ""
    )
    lines = [
        outcome.terminal_report or outcome.report,
        *(f"note: {note}" for note in outcome.notes),
        f"study '{outcome.study}' in {outcome.storage}: {counted}, front of "
        f"{outcome.front_size}; MLflow parent run {outcome.parent_run_id} at "
        f"{redact(config.tracking.uri)}",
    ]
    if outcome.champion_uri is None:
        lines.append(f"no champion was registered: {outcome.champion_note or 'nothing finished'}")
    else:
        lines.append(f"champion: {outcome.champion_uri} ({outcome.champion_note})")
    if config.tracking.uri.startswith("sqlite:///"):
        # MLflow 3.17's UI opens experiments in its GenAI view unless the URL asks otherwise.
        lines += [
            f"look at it: mlflow ui --backend-store-uri {config.tracking.uri}",
            f"  then open http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs"
            "?workflowType=machine_learning",
        ]
    print(fit("\n".join(lines)))
    return 0


def worker_command(args: argparse.Namespace) -> int:
    options = WorkerSettings.from_args(args)
    if options.data is not None:
        check_table_file(options.data)
    from search.commands.worker import run_workers

    outcomes = run_workers(
        options.study,
        options.storage,
        devices=options.devices,
        workers_per_device=options.workers_per_device,
        tracking_uri=options.tracking_uri,
        data_path=options.data,
    )
    for outcome in outcomes:
        print(
            f"worker on study '{outcome.study}' (sampler seed {outcome.seed}): ran "
            f"{outcome.ran} trials; {worker_state(outcome.complete, outcome.target)}"
        )
    return 0


def drift_command(args: argparse.Namespace) -> int:
    from search.config import DEFAULT_TRACKING_URI

    options = DriftSettings.from_args(args)
    check_table_file(args.data)
    if options.labels is not None:
        check_table_file(options.labels)
    from search.commands.drift import run_drift

    outcome = run_drift(
        model_uri(args.model),
        args.data,
        tracking_uri=options.tracking_uri or DEFAULT_TRACKING_URI,
        psi_threshold=options.psi_threshold,
        alpha=options.alpha,
        labels_path=options.labels,
    )
    if outcome.report.quality is not None:
        # Before the drift table: a broken column makes its drift figures meaningless.
        print(outcome.report.quality.format_table())
        print()
    print(outcome.report.format_table())
    print(f"MLflow run {outcome.run_id} at {redact(outcome.tracking_uri)}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from search.commands.report import study_report

    print(study_report(args.study, args.storage))
    return 0


def sensitivity_command(args: argparse.Namespace) -> int:
    from search.commands.sensitivity import run_sensitivity

    options = SensitivitySettings.from_args(args)
    ratios, epochs = options.lists()
    outcome = run_sensitivity(
        args.study,
        args.storage,
        ratios=ratios,
        criterion=options.criterion,
        fine_tune_epochs=epochs,
        tracking_uri=options.tracking_uri,
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
    options = RetrainSettings.from_args(args, config_path="config", search_trials="search")
    name = registered_name(args.model)
    check_table_file(args.data)
    from search.commands.retrain import run_retrain

    outcome = run_retrain(name, args.data, args.target, options)
    for line in outcome.lines:
        print(fit(line))
    # One line, which schedulers' logs and scripts read as the outcome.
    print(f"{outcome.action}: {'; '.join(outcome.reasons)}")
    print(f"{name}@champion is version {outcome.champion}")
    if outcome.run_id:
        print(f"MLflow run {outcome.run_id}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from search import tracking
    from search.config import DEFAULT_TRACKING_URI
    from search.tracking import rollback

    name = registered_name(args.model)
    uri = args.tracking_uri or DEFAULT_TRACKING_URI
    tracking.configure(uri, "tabslim")
    before, after = rollback(MlflowClient(), name, uri)
    print(
        f"{name}@champion moved back from version {before} to version {after}; "
        f"{name}@previous is now version {before}"
    )
    return 0


def export_command(args: argparse.Namespace) -> int:
    from search.commands.export import run_export
    from search.config import DEFAULT_TRACKING_URI

    outcome = run_export(
        args.model, args.out, tracking_uri=args.tracking_uri or DEFAULT_TRACKING_URI
    )
    inputs = ", ".join(f"{name} ({kind})" for name, kind in outcome.inputs.items())
    print(f"wrote {outcome.path}: one ONNX Runtime call on the raw columns")
    print(f"  inputs, each [N, 1]: {inputs}")
    print(f"  outputs: {', '.join(outcome.outputs)}")
    if outcome.composed:
        print(
            "  (the model predates the served graph; it was composed from its network and "
            "preprocessing)"
        )
    return 0
