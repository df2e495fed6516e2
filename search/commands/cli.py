"""The `tabslim` command. Bad input ends with exit code 2 and one line, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from lightning_modules.errors import TabslimInputError
from pruning.choices import CRITERIA
from search.cluster import install_log_redaction, redact
from search.commands import handlers
from search.commands.settings import DriftSettings, RetrainSettings, SensitivitySettings, Settings
from search.config.choices import SAMPLERS, TASK_CHOICES

STORAGE_ENV = "TABSLIM_STORAGE"

EXIT_BAD_INPUT = 2


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


# Every flag, declared once: how it is read, and what it says where a command adds nothing.
# A command may say in its own words what a shared flag means there (`--tracking-uri` of a
# worker is the study's server), and its defaults come from its settings (settings.py).
FLAGS: dict[str, dict[str, Any]] = {
    "--data": {"metavar": "FILE"},
    "--dataset": {"metavar": "NAME", "help": "a bundled dataset instead of a file"},
    "--target": {"metavar": "COLUMN"},
    "--task": {"choices": TASK_CHOICES},
    "--drop-columns": {
        "metavar": "A,B,...",
        "help": "columns that are not features (IDs and dates are left out without asking)",
    },
    "--time-column": {"metavar": "COLUMN"},
    "--sample-rows": {
        "type": _positive_int,
        "metavar": "N",
        "help": "work on a seeded sample of N rows of --data (for tables too large to search)",
    },
    "--config": {"metavar": "FILE"},
    "--tracking-uri": {"metavar": "URI"},
    "--experiment": {"metavar": "NAME", "help": "MLflow experiment name"},
    "--max-epochs": {"type": _positive_int, "metavar": "N"},
    "--seed": {"type": int, "metavar": "N", "help": "seeds the split and the training"},
    "--quiet": {"action": "store_true", "help": "no progress bar"},
    "--study": {"metavar": "NAME"},
    "--storage": {"metavar": "URL"},
    "--model": {"metavar": "NAME"},
    "--n-trials": {
        "type": _positive_int,
        "metavar": "N",
        "help": "trials the study should have in all (the baseline included)",
    },
    "--timeout": {
        "type": _positive_float,
        "metavar": "S",
        "help": "stop starting trials after S seconds",
    },
    "--workers": {"type": _positive_int, "metavar": "N", "help": "local worker processes"},
    "--devices": {
        "metavar": "auto|cpu|0,1,...",
        "help": "the GPUs this node's worker processes train on, one each (default: auto, all "
        "GPUs there are, else the CPU)",
    },
    "--workers-per-device": {
        "type": _positive_int,
        "metavar": "K",
        "help": "worker processes per device (several small trials share a GPU well)",
    },
    "--sampler": {
        "metavar": "NAME",
        "help": f"Optuna sampler: {', '.join(SAMPLERS)} (default: tpe)",
    },
    "--psi-threshold": {
        "type": float,
        "metavar": "X",
        "help": "PSI from which a column counts as drifted (default: %(default)s)",
    },
    "--alpha": {
        "type": float,
        "metavar": "P",
        "help": "corrected p-value below which a shift counts (default: %(default)s)",
    },
    "--labels": {
        "metavar": "FILE",
        "help": "the target of each row of --data, in order (CSV or Parquet with the target "
        "column): the realized metric is shown beside the one estimated without labels",
    },
    "--out": {"metavar": "FILE"},
    "--dry-run": {"action": "store_true", "help": "say what it would do, change nothing"},
    "--force": {"action": "store_true", "help": "retrain even without drift"},
    "--holdout": {
        "type": float,
        "metavar": "SHARE",
        "help": "share of the new rows held out, the latest ones (default: %(default)s)",
    },
    "--min-gain": {
        "type": float,
        "metavar": "X",
        "help": "how far a challenger's interval must clear the champion (default: %(default)s)",
    },
    "--tolerance": {
        "type": float,
        "metavar": "X",
        "help": "how far below validation (relative for RMSE) the whole 95%% interval of the "
        "realized (or estimated) metric must lie for a retrain (default: %(default)s)",
    },
    "--drift-threshold": {
        "type": float,
        "metavar": "X",
        "help": "importance-weighted drift score that calls for a retrain (default: "
        "%(default)s; inf: only a fall of the realized metric does)",
    },
    "--reference-share": {
        "type": float,
        "metavar": "S",
        "help": "add this share of the training rows stored with the champion to the window "
        "(default: %(default)s, the new rows only)",
    },
    "--search": {
        "type": int,
        "metavar": "N",
        "help": "also train a challenger found by an N-trial search seeded with the champion's "
        "study front and bounded by its widths (default: %(default)s, none)",
    },
    "--ratios": {
        "metavar": "R,R,...",
        "help": "shares of a group's units to remove, each in (0, 1); a group always keeps at "
        "least one unit (default: %(default)s)",
    },
    "--criterion": {
        "metavar": "NAME",
        "help": f"unit importance criterion deciding which units go: {', '.join(CRITERIA)} "
        "(default: %(default)s)",
    },
    "--epochs": {
        "metavar": "E,E,...",
        "help": "fine-tuning epochs after pruning, each tried separately (default: %(default)s)",
    },
}


# What --model takes in drift, retrain and rollback (search.commands.models).
_MODEL_FORMS = "a registered model: NAME (its champion), NAME@ALIAS, models:/NAME@ALIAS"


def _add(parser: Any, flag: str, settings: type[Settings] | None = None, **said: Any) -> None:
    """`flag` as FLAGS declares it, with what this command `said`; its default, if any, from
    the command's `settings` (the field named like the flag)."""
    field = flag.removeprefix("--").replace("-", "_")
    if settings is not None and field in settings.model_fields:
        said.setdefault("default", settings.model_fields[field].default)
    parser.add_argument(flag, **(FLAGS[flag] | said))


def _storage(parser: argparse.ArgumentParser, what: str) -> None:
    # An environment variable keeps a URL with a password off the command line (and `ps`).
    default = os.environ.get(STORAGE_ENV) or None
    help = f"{what} (default: ${STORAGE_ENV}, else mlruns/optuna.journal)"
    _add(parser, "--storage", default=default, help=help)


def _data_and_config(parser: argparse.ArgumentParser) -> None:
    """The flags `train` and `search` share: the data, the config and what overrides it."""
    source = parser.add_argument_group("data (overrides the config's data section)")
    _add(source, "--data", help="a CSV or Parquet file to train on")
    _add(source, "--dataset")
    _add(source, "--target", help="the column to predict")
    _add(source, "--task")
    _add(source, "--drop-columns")
    _add(
        source,
        "--time-column",
        help="orders the rows for a split in time (train earliest, test latest); never a feature",
    )
    _add(source, "--sample-rows")
    _add(parser, "--config", help="YAML config (default: configs/default.yaml)")
    _add(parser, "--tracking-uri", help="MLflow tracking URI")
    _add(parser, "--experiment")
    _add(parser, "--max-epochs")
    _add(parser, "--seed")


def _train(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train the baseline network once, measure it and log it to MLflow",
        description="Train the configured baseline MLP, measure its size and latency, and log "
        "parameters, metrics and a raw-DataFrame pyfunc model to MLflow.",
    )
    _data_and_config(train)
    _add(train, "--quiet")
    train.add_argument(
        "--all-metrics",
        action="store_true",
        help="print every metric the run logged (default: the primary metric, size and latency)",
    )
    train.set_defaults(handler=handlers.train_command)


def _search(commands: Any) -> None:
    search = commands.add_parser(
        "search",
        help="search per-layer widths for smaller, faster networks (multi-objective Optuna)",
        description="Train the baseline, then candidates: narrower shapes trained from scratch "
        "and pruning plans applied to the trained baseline and fine-tuned; keep the Pareto front "
        "of validation metric, size and latency in MLflow and register the smallest model "
        "within the accuracy floor as '<study>@champion'. Running it again with "
        "the same study continues it: finished trials are kept and never trained twice.",
    )
    _data_and_config(search)
    _add(search, "--n-trials")
    _add(search, "--timeout")
    _add(search, "--study", help="study name (default: tabslim-<data>)")
    _storage(
        search,
        "Optuna storage: a journal file path or a database URL, e.g. "
        "postgresql+psycopg://user@host/db with the password in PGPASSWORD or ~/.pgpass",
    )
    for flag in ("--workers", "--devices", "--workers-per-device", "--sampler", "--quiet"):
        _add(search, flag)
    _add(
        search,
        "--force",
        help="move <study>@champion to this search's champion even off a version that "
        "`tabslim retrain` promoted (which a re-run leaves in place otherwise)",
    )
    search.set_defaults(handler=handlers.search_command)


def _worker(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="join a study that `tabslim search` started, and run its trials",
        description="Join an existing study and run its trials until it has its n_trials. "
        "Everything comes from what the study stores (config, data path, split, baseline); "
        "start workers on as many nodes as you like, against a storage they all reach "
        "(PostgreSQL). The coordinator (`tabslim search`) mirrors their trials to MLflow.",
    )
    _add(worker, "--study", required=True)
    _storage(worker, "the study's Optuna storage")
    _add(
        worker,
        "--tracking-uri",
        help="the study's MLflow tracking server (http://HOST:PORT), through which trials' "
        "networks travel when nodes share no disk (default: the study's)",
    )
    _add(
        worker,
        "--data",
        help="the study's table on this node (default: the path the study records); refused "
        "when its contents differ",
    )
    _add(worker, "--devices")
    _add(worker, "--workers-per-device")
    worker.set_defaults(handler=handlers.worker_command)


def _drift(commands: Any) -> None:
    drift = commands.add_parser(
        "drift",
        help="compare new rows with the reference profile a logged model carries",
        description="Compare new rows with the training data of a logged model, from the "
        "profile stored with it: per column a KS or chi-squared test (Benjamini-Hochberg "
        "corrected), PSI and a distance; a column counts as drifted when its PSI passes the "
        "threshold and its corrected p-value is below alpha. With the target column present, "
        "also the realized metric with its 95% interval; for rows without it, the metric "
        "estimated from the features (CBPE for classifiers, DLE for regressors). Prints the "
        "columns worst first and logs an MLflow run with drift_report.json, drift_report.html "
        "and drift.png.",
    )
    _add(
        drift,
        "--model",
        required=True,
        help=_MODEL_FORMS + "; or the models:/m-... URI `tabslim train` prints",
    )
    _add(drift, "--data", required=True, help="new rows, CSV or Parquet")
    _add(drift, "--tracking-uri", help="MLflow tracking URI (default: mlruns/mlflow.db)")
    _add(drift, "--psi-threshold", DriftSettings)
    _add(drift, "--alpha", DriftSettings)
    _add(drift, "--labels", DriftSettings)
    drift.set_defaults(handler=handlers.drift_command)


def _retrain(commands: Any) -> None:
    retrain = commands.add_parser(
        "retrain",
        help="retrain the registered champion on new rows when they call for it",
        description="Check NAME@champion against new rows (realized metric, drift); when it "
        "needs it (or with --force), train challengers on a window of the rows (the "
        "champion's widths from scratch, and the champion fine-tuned), score all on a holdout "
        "that lies after the window in time, and promote a challenger only when its paired "
        "95% interval clears --min-gain within the champion's size and latency. Safe to "
        "schedule: the same data twice changes nothing, and two runs at once promote at most "
        "once. Exit code 0 for every normal outcome.",
    )
    _add(retrain, "--model", required=True, help=_MODEL_FORMS.replace("ALIAS", "champion"))
    _add(retrain, "--data", required=True, help="new labelled rows")
    _add(retrain, "--target", required=True)
    _add(retrain, "--time-column", help="orders window and holdout")
    _add(retrain, "--config", help="training settings (default: configs/default.yaml)")
    _add(retrain, "--tracking-uri", help="default: the config's, mlruns/mlflow.db")
    # The training flags `train` has, for the challengers (they override the config).
    _add(retrain, "--experiment")
    _add(retrain, "--max-epochs", help="the challengers' training epochs (default: the config's)")
    _add(retrain, "--seed")
    for flag in ("--dry-run", "--force", "--holdout", "--min-gain", "--tolerance"):
        _add(retrain, flag, RetrainSettings)
    _add(retrain, "--drift-threshold", RetrainSettings)
    _add(retrain, "--reference-share", RetrainSettings)
    _add(retrain, "--search", default=RetrainSettings.model_fields["search_trials"].default)
    retrain.set_defaults(handler=handlers.retrain_command)


def _rollback(commands: Any) -> None:
    rollback = commands.add_parser(
        "rollback",
        help="move NAME@champion back to NAME@previous",
        description="Move the alias champion back to the version the last promotion replaced "
        "(and previous to the one it leaves); run it again to undo.",
    )
    _add(rollback, "--model", required=True, help=_MODEL_FORMS.replace("ALIAS", "champion"))
    _add(rollback, "--tracking-uri", help="default: mlruns/mlflow.db")
    rollback.set_defaults(handler=handlers.rollback_command)


def _report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="print a study's Pareto front relative to its baseline",
        description="Print the front of a study as a table relative to the baseline: parameter "
        "ratio, latency ratio and validation metric delta.",
    )
    _add(report, "--study", required=True)
    _storage(report, "Optuna storage")
    report.set_defaults(handler=handlers.report_command)


def _sensitivity(commands: Any) -> None:
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
    _add(sensitivity, "--study", required=True)
    _storage(sensitivity, "Optuna storage")
    for flag in ("--ratios", "--criterion", "--epochs"):
        _add(sensitivity, flag, SensitivitySettings)
    _add(sensitivity, "--tracking-uri", help="MLflow tracking URI (default: the study's)")
    sensitivity.set_defaults(handler=handlers.sensitivity_command)


def _export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write a logged model as one self-contained ONNX file (preprocessing inside)",
        description="Write a logged tabslim model (the champion, or any trial's) as a single "
        "ONNX file that takes the raw columns, one input per column named after it, shape "
        "[N, 1]: double for numbers (NaN is missing), string for categories ('<missing>' is "
        "missing). Its outputs are the prediction (class labels for a classifier), then the "
        "class probabilities or the anomaly score; the file's metadata describes both. It runs "
        "in ONNX Runtime from any language, with no Python and no tabslim.",
    )
    _add(export, "--model", required=True, metavar="URI", help="e.g. models:/NAME@champion")
    _add(export, "--out", required=True, help="the ONNX file to write, e.g. model.onnx")
    _add(export, "--tracking-uri", help="MLflow tracking URI (default: mlruns/mlflow.db)")
    export.set_defaults(handler=handlers.export_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabslim",
        description="Find smaller, faster neural networks for tabular data at (nearly) the same "
        "accuracy. Results go to MLflow (default: sqlite:///mlruns/mlflow.db).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _train,
        _search,
        _worker,
        _drift,
        _retrain,
        _rollback,
        _report,
        _sensitivity,
        _export,
    ):
        add(commands)
    return parser


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
