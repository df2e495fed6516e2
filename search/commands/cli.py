"""The `tabslim` command: collects the commands (one module each, with its flags, settings and
run) into one parser. Bad input ends with exit code 2 and one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from lightning_modules.errors import TabslimInputError
from search.cluster import install_log_redaction, redact
from search.commands.command import Command
from search.commands.drift_command import DriftCommand
from search.commands.export_command import ExportCommand
from search.commands.report_command import ReportCommand
from search.commands.retrain_command import RetrainCommand
from search.commands.rollback_command import RollbackCommand
from search.commands.search_command import SearchCommand
from search.commands.sensitivity_command import SensitivityCommand
from search.commands.train_command import TrainCommand
from search.commands.worker_command import WorkerCommand

EXIT_BAD_INPUT = 2

# In the order `tabslim --help` lists them.
COMMANDS: tuple[Command, ...] = (
    TrainCommand(),
    SearchCommand(),
    WorkerCommand(),
    DriftCommand(),
    RetrainCommand(),
    RollbackCommand(),
    ReportCommand(),
    SensitivityCommand(),
    ExportCommand(),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabslim",
        description="Find smaller, faster neural networks for tabular data at (nearly) the same "
        "accuracy. Results go to MLflow (default: sqlite:///mlruns/mlflow.db).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
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
