"""The `tabslim` command. Bad input ends with exit code 2 and one line, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from lightning_modules.errors import TabslimInputError
from pruning.choices import CRITERIA, DEFAULT_CRITERION, DEFAULT_EPOCHS, DEFAULT_RATIOS
from search.cluster import install_log_redaction, redact
from search.commands import handlers as cli_handlers
from search.config.choices import SAMPLERS

STORAGE_ENV = "TABSLIM_STORAGE"

EXIT_BAD_INPUT = 2
TASKS = ("auto", "classification", "binary", "multiclass", "regression", "anomaly")


def _listed(values: Sequence[object]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("data (overrides the config's data section)")
    source.add_argument("--data", metavar="FILE", help="a CSV or Parquet file to train on")
    source.add_argument("--dataset", metavar="NAME", help="a bundled dataset instead of a file")
    source.add_argument("--target", metavar="COLUMN", help="the column to predict")
    source.add_argument("--task", choices=TASKS)
    source.add_argument(
        "--drop-columns", metavar="A,B,...",
        help="columns that are not features (IDs and dates are left out without asking)",
    )  # fmt: skip
    source.add_argument(
        "--time-column", metavar="COLUMN",
        help="orders the rows for a split in time (train earliest, test latest); never a feature",
    )  # fmt: skip
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default: configs/default.yaml)"
    )
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI")
    parser.add_argument("--experiment", metavar="NAME", help="MLflow experiment name")
    parser.add_argument("--max-epochs", type=_positive_int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="N", help="seeds the split and the training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabslim",
        description="Find smaller, faster neural networks for tabular data at (nearly) the same "
        "accuracy. Results go to MLflow (default: sqlite:///mlruns/mlflow.db).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train the baseline network once, measure it and log it to MLflow",
        description="Train the configured baseline MLP, measure its size and latency, and log "
        "parameters, metrics and a raw-DataFrame pyfunc model to MLflow.",
    )
    _add_common(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=cli_handlers.train_command)

    search = commands.add_parser(
        "search",
        help="search per-layer widths for smaller, faster networks (multi-objective Optuna)",
        description="Train the baseline, then candidates: narrower shapes trained from scratch "
        "and pruning plans applied to the trained baseline and fine-tuned; keep the Pareto front "
        "of validation metric, size and latency in MLflow and register the smallest model "
        "within the accuracy floor as '<study>@champion'. Running it again with "
        "the same study continues it: finished trials are kept and never trained twice.",
    )
    _add_common(search)
    search.add_argument(
        "--n-trials", type=_positive_int, metavar="N",
        help="trials the study should have in all (the baseline included)",
    )  # fmt: skip
    search.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="stop starting trials after S seconds"
    )
    search.add_argument("--study", metavar="NAME", help="study name (default: tabslim-<data>)")
    _storage_flag(
        search,
        "Optuna storage: a journal file path or a database URL, e.g. "
        "postgresql+psycopg://user@host/db with the password in PGPASSWORD or ~/.pgpass",
    )
    search.add_argument("--workers", type=_positive_int, metavar="N", help="local worker processes")
    _device_flags(search)
    search.add_argument(
        "--sampler", metavar="NAME", help=f"Optuna sampler: {', '.join(SAMPLERS)} (default: tpe)"
    )
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    search.set_defaults(handler=cli_handlers.search_command)

    worker = commands.add_parser(
        "worker",
        help="join a study that `tabslim search` started, and run its trials",
        description="Join an existing study and run its trials until it has its n_trials. "
        "Everything comes from what the study stores (config, data path, split, baseline); "
        "start workers on as many nodes as you like, against a storage they all reach "
        "(PostgreSQL). The coordinator (`tabslim search`) mirrors their trials to MLflow.",
    )
    worker.add_argument("--study", required=True, metavar="NAME")
    _storage_flag(worker, "the study's Optuna storage")
    worker.add_argument(
        "--tracking-uri", metavar="URI",
        help="the study's MLflow tracking server (http://HOST:PORT), through which trials' "
        "networks travel when nodes share no disk (default: the study's)",
    )  # fmt: skip
    worker.add_argument(
        "--data", metavar="FILE",
        help="the study's table on this node (default: the path the study records); refused "
        "when its contents differ",
    )  # fmt: skip
    _device_flags(worker)
    worker.set_defaults(handler=cli_handlers.worker_command)

    drift = commands.add_parser(
        "drift",
        help="compare new rows with the reference profile a logged model carries",
        description="Compare new rows with the training data of a logged model, from the "
        "profile stored with it: per column a KS or chi-squared test (Benjamini-Hochberg "
        "corrected), PSI and a distance; a column counts as drifted when its PSI passes the "
        "threshold and its corrected p-value is below alpha. With the target column present, "
        "also the realized metric with its 95% interval. Prints the columns worst first and "
        "logs an MLflow run with drift_report.json, drift_report.html and drift.png.",
    )
    drift.add_argument("--model", required=True, metavar="URI",
                       help="e.g. models:/tabslim-digits@champion")  # fmt: skip
    drift.add_argument("--data", required=True, metavar="FILE", help="new rows, CSV or Parquet")
    drift.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: mlruns/mlflow.db)"
    )
    drift.add_argument(
        "--psi-threshold", type=float, default=0.2, metavar="X",
        help="PSI from which a column counts as drifted (default: %(default)s)",
    )  # fmt: skip
    drift.add_argument(
        "--alpha", type=float, default=0.05, metavar="P",
        help="corrected p-value below which a shift counts (default: %(default)s)",
    )  # fmt: skip
    drift.set_defaults(handler=cli_handlers.drift_command)

    retrain = commands.add_parser(
        "retrain",
        help="retrain the registered champion on new rows when they call for it",
        description="Check NAME@champion against new rows (realized metric, drift); when it "
        "needs it (or with --force), train challengers on a window of the rows (the "
        "champion's widths from scratch, and the champion fine-tuned), score all on a holdout "
        "that lies after the window in time, and promote a challenger only when its paired "
        "95%% interval clears --min-gain within the champion's size and latency. Safe to "
        "schedule: the same data twice changes nothing, and two runs at once promote at most "
        "once. Exit code 0 for every normal outcome.",
    )
    retrain.add_argument("--model", required=True, metavar="NAME", help="a registered model")
    retrain.add_argument("--data", required=True, metavar="FILE", help="new labelled rows")
    retrain.add_argument("--target", required=True, metavar="COLUMN")
    retrain.add_argument("--time-column", metavar="COLUMN", help="orders window and holdout")
    retrain.add_argument(
        "--config", metavar="FILE", help="training settings (default: configs/default.yaml)"
    )
    retrain.add_argument(
        "--tracking-uri", metavar="URI", help="default: the config's, mlruns/mlflow.db"
    )
    retrain.add_argument(
        "--dry-run", action="store_true", help="say what it would do, change nothing"
    )
    retrain.add_argument("--force", action="store_true", help="retrain even without drift")
    retrain.add_argument(
        "--holdout", type=float, default=0.3, metavar="SHARE",
        help="share of the new rows held out, the latest ones (default: %(default)s)",
    )  # fmt: skip
    retrain.add_argument(
        "--min-gain", type=float, default=0.0, metavar="X",
        help="how far a challenger's interval must clear the champion (default: %(default)s)",
    )  # fmt: skip
    retrain.add_argument(
        "--tolerance", type=float, default=0.01, metavar="X",
        help="how far the realized metric may fall below validation (relative for RMSE) "
        "before it retrains (default: %(default)s)",
    )  # fmt: skip
    retrain.add_argument(
        "--drift-threshold", type=float, default=0.1, metavar="X",
        help="importance-weighted drift score that calls for a retrain (default: %(default)s; "
        "inf: only a fall of the realized metric does)",
    )  # fmt: skip
    retrain.add_argument(
        "--reference-share", type=float, default=0.0, metavar="S",
        help="add this share of the training rows stored with the champion to the window "
        "(default: %(default)s, the new rows only)",
    )  # fmt: skip
    retrain.add_argument(
        "--search", type=int, default=0, metavar="N",
        help="also train a challenger found by an N-trial search seeded with the champion's "
        "study front and bounded by its widths (default: %(default)s, none)",
    )  # fmt: skip
    retrain.set_defaults(handler=cli_handlers.retrain_command)

    rollback = commands.add_parser(
        "rollback",
        help="move NAME@champion back to NAME@previous",
        description="Move the alias champion back to the version the last promotion replaced "
        "(and previous to the one it leaves); run it again to undo.",
    )
    rollback.add_argument("--model", required=True, metavar="NAME")
    rollback.add_argument("--tracking-uri", metavar="URI", help="default: mlruns/mlflow.db")
    rollback.set_defaults(handler=cli_handlers.rollback_command)

    report = commands.add_parser(
        "report",
        help="print a study's Pareto front relative to its baseline",
        description="Print the front of a study as a table relative to the baseline: parameter "
        "ratio, latency ratio and validation metric delta.",
    )
    report.add_argument("--study", required=True, metavar="NAME")
    _storage_flag(report, "Optuna storage")
    report.set_defaults(handler=cli_handlers.report_command)

    sensitivity = commands.add_parser(
        "sensitivity",
        help="prune each prunable group (hidden layer, heads, channels...) of a study's baseline "
        "alone and record the metric drop",
        description="Prune each prunable group of a study's baseline alone (an MLP's hidden "
        "layers; a ResNet's blocks and residual width; an FT-Transformer's heads, feed-forward "
        "units and token width; a 1D-CNN's channels) at several ratios, with no fine-tuning and "
        "with one epoch by default, and record the drop in the validation metric (positive = "
        "worse). Prints a group x ratio table and the order of groups from least to most "
        "sensitive, and logs the table, a heatmap and the order as a run nested "
        "under the study's MLflow run. Takes a study made by `tabslim search` (its config, data "
        "split and baseline network are stored with it), not a bare model.",
    )
    sensitivity.add_argument("--study", required=True, metavar="NAME")
    _storage_flag(sensitivity, "Optuna storage")
    sensitivity.add_argument(
        "--ratios", default=_listed(DEFAULT_RATIOS), metavar="R,R,...",
        help="shares of a group's units to remove, each in (0, 1); a group always keeps at "
        "least one unit (default: %(default)s)",
    )  # fmt: skip
    sensitivity.add_argument(
        "--criterion", default=DEFAULT_CRITERION, metavar="NAME",
        help=f"unit importance criterion deciding which units go: {', '.join(CRITERIA)} "
        "(default: %(default)s)",
    )  # fmt: skip
    sensitivity.add_argument(
        "--epochs", default=_listed(DEFAULT_EPOCHS), metavar="E,E,...",
        help="fine-tuning epochs after pruning, each tried separately (default: %(default)s)",
    )  # fmt: skip
    sensitivity.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: the study's)"
    )
    sensitivity.set_defaults(handler=cli_handlers.sensitivity_command)
    return parser


def _device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", metavar="auto|cpu|0,1,...",
        help="the GPUs this node's worker processes train on, one each (default: auto, all "
        "GPUs there are, else the CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--workers-per-device", type=_positive_int, metavar="K",
        help="worker processes per device (several small trials share a GPU well)",
    )  # fmt: skip


def _storage_flag(parser: argparse.ArgumentParser, what: str) -> None:
    # An environment variable keeps a URL with a password off the command line (and `ps`).
    parser.add_argument(
        "--storage",
        metavar="URL",
        default=os.environ.get(STORAGE_ENV) or None,
        help=f"{what} (default: ${STORAGE_ENV}, else mlruns/optuna.journal)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    install_log_redaction()
    try:
        return handler(args)
    except TabslimInputError as error:
        print(f"tabslim: error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("tabslim: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug's traceback, but without the URLs' passwords
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
