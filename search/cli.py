"""The `tabslim` command. Bad input ends with exit code 2 and one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from lightning_modules.errors import TabslimInputError

EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("data (overrides the config's data section)")
    source.add_argument("--data", metavar="FILE", help="a CSV or Parquet file to train on")
    source.add_argument("--dataset", metavar="NAME", help="a bundled dataset instead of a file")
    source.add_argument("--target", metavar="COLUMN", help="the column to predict")
    source.add_argument(
        "--task", choices=["auto", "classification", "binary", "multiclass", "regression"]
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default: configs/default.yaml)"
    )
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI")
    parser.add_argument("--experiment", metavar="NAME", help="MLflow experiment name")
    parser.add_argument("--max-epochs", type=_positive_int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="N", help="seeds the split and the training")


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
            "data.seed": args.seed,
            "training.seed": args.seed,
            "training.max_epochs": args.max_epochs,
            "tracking.uri": args.tracking_uri,
            "tracking.experiment": args.experiment,
        },
    )


def _train(args: argparse.Namespace) -> int:
    from search.train_job import run_train

    config = _config_from(args)
    outcome = run_train(config, progress_bar=not args.quiet)
    tracking = config.tracking
    print(f"run {outcome.run_id} in experiment '{tracking.experiment}' at {tracking.uri}")
    for name, value in sorted(outcome.metrics.items()):
        print(f"  {name:<44} {value:.6g}")
    print(f"model: {outcome.model_uri}  (mlflow.pyfunc.load_model(uri).predict(raw_rows))")
    return 0


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
    train.set_defaults(handler=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except TabslimInputError as error:
        print(f"tabslim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("tabslim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
