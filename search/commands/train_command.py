"""`tabslim train`: its flags and what it prints; the job is `search.commands.train`."""

from __future__ import annotations

import argparse
import sys

from search.cluster import redact
from search.commands.command import Command
from search.commands.config_flags import DataSettings, add_data_and_config, config_from
from search.commands.flags import add_flag
from search.commands.output import train_summary

__all__ = ["TrainCommand"]


class TrainCommand(Command):
    name = "train"
    help = "train the baseline network once, measure it and log it to MLflow"
    description = (
        "Train the configured baseline MLP, measure its size and latency, and log "
        "parameters, metrics and a raw-DataFrame pyfunc model to MLflow."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_data_and_config(parser)
        add_flag(parser, "--quiet")
        parser.add_argument(
            "--all-metrics",
            action="store_true",
            help="print every metric the run logged (default: the primary metric, size and "
            "latency)",
        )

    def run(self, args: argparse.Namespace) -> int:
        config = config_from(DataSettings.from_args(args))
        from search.commands.train import run_train

        # Lightning's per-step bar is for a terminal; in a log file it is thousands of lines.
        outcome = run_train(config, progress_bar=not args.quiet and sys.stdout.isatty())
        tracking = config.tracking
        print(
            f"run {outcome.run_id} in experiment '{tracking.experiment}' at {redact(tracking.uri)}"
        )
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
            f"from the shell: MLFLOW_TRACKING_URI={redact(tracking.uri)} mlflow models predict "
            f"-m {outcome.model_uri} -i rows.csv -t csv --env-manager local"
        )
        return 0
