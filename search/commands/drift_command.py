"""`tabslim drift`: its flags, its settings and what it prints; the job is
`search.commands.drift`."""

from __future__ import annotations

import argparse

from lightning_modules.tables import check_table_file
from search.cluster import redact
from search.commands.command import Command, Settings
from search.commands.flags import MODEL_FORMS, add_flag
from search.commands.models import model_uri
from search.config.choices import DRIFT_ALPHA, DRIFT_PSI_THRESHOLD

__all__ = ["DriftCommand", "DriftSettings"]


class DriftSettings(Settings):
    tracking_uri: str | None = None
    psi_threshold: float = DRIFT_PSI_THRESHOLD
    alpha: float = DRIFT_ALPHA
    # A table holding the target of each row of --data, in order; None: the labels --data has.
    labels: str | None = None


class DriftCommand(Command):
    name = "drift"
    help = "compare new rows with the reference profile a logged model carries"
    description = (
        "Compare new rows with the training data of a logged model, from the "
        "profile stored with it: per column a KS or chi-squared test (Benjamini-Hochberg "
        "corrected), PSI and a distance; a column counts as drifted when its PSI passes the "
        "threshold and its corrected p-value is below alpha. With the target column present, "
        "also the realized metric with its 95% interval; for rows without it, the metric "
        "estimated from the features (CBPE for classifiers, DLE for regressors). Prints the "
        "columns worst first and logs an MLflow run with drift_report.json, drift_report.html "
        "and drift.png."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flag(
            parser,
            "--model",
            required=True,
            help=MODEL_FORMS + "; or the models:/m-... URI `tabslim train` prints",
        )
        add_flag(parser, "--data", required=True, help="new rows, CSV or Parquet")
        add_flag(parser, "--tracking-uri", help="MLflow tracking URI (default: mlruns/mlflow.db)")
        add_flag(
            parser,
            "--psi-threshold",
            DriftSettings,
            type=float,
            metavar="X",
            help="PSI from which a column counts as drifted (default: %(default)s)",
        )
        add_flag(
            parser,
            "--alpha",
            DriftSettings,
            type=float,
            metavar="P",
            help="corrected p-value below which a shift counts (default: %(default)s)",
        )
        add_flag(
            parser,
            "--labels",
            DriftSettings,
            metavar="FILE",
            help="the target of each row of --data, in order (CSV or Parquet with the target "
            "column): the realized metric is shown beside the one estimated without labels",
        )

    def run(self, args: argparse.Namespace) -> int:
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
