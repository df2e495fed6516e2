"""The flags several commands share, declared once: how each is read and what it says where a
command adds nothing. A command may say in its own words what a shared flag means there
(`--tracking-uri` of a worker is the study's server); a flag only one command has is declared
in that command's module. Imports nothing heavy (`tabslim --help`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from search.commands.command import Settings
from search.config.choices import TASK_CHOICES

__all__ = [
    "FLAGS",
    "MODEL_FORMS",
    "STORAGE_ENV",
    "add_flag",
    "add_storage",
    "positive_float",
    "positive_int",
]

STORAGE_ENV = "TABSLIM_STORAGE"

# What --model takes in drift, retrain and rollback (search.commands.models).
MODEL_FORMS = "a registered model: NAME (its champion), NAME@ALIAS, models:/NAME@ALIAS"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


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
        "type": positive_int,
        "metavar": "N",
        "help": "work on a seeded sample of N rows of --data (for tables too large to search)",
    },
    "--config": {"metavar": "FILE"},
    "--tracking-uri": {"metavar": "URI"},
    "--experiment": {"metavar": "NAME", "help": "MLflow experiment name"},
    "--max-epochs": {"type": positive_int, "metavar": "N"},
    "--seed": {"type": int, "metavar": "N", "help": "seeds the split and the training"},
    "--quiet": {"action": "store_true", "help": "no progress bar"},
    "--study": {"metavar": "NAME"},
    "--storage": {"metavar": "URL"},
    "--model": {"metavar": "NAME"},
    "--devices": {
        "metavar": "auto|cpu|0,1,...",
        "help": "the GPUs this node's worker processes train on, one each (default: auto, all "
        "GPUs there are, else the CPU)",
    },
    "--workers-per-device": {
        "type": positive_int,
        "metavar": "K",
        "help": "worker processes per device (several small trials share a GPU well)",
    },
}


def add_flag(parser: Any, flag: str, settings: type[Settings] | None = None, **said: Any) -> None:
    """`flag` as FLAGS declares it (if it does), with what this command `said`; its default, if
    any, from the command's `settings` (the field named like the flag)."""
    field = flag.removeprefix("--").replace("-", "_")
    if settings is not None and field in settings.model_fields:
        said.setdefault("default", settings.model_fields[field].default)
    parser.add_argument(flag, **(FLAGS.get(flag, {}) | said))


def add_storage(parser: argparse.ArgumentParser, what: str) -> None:
    """`--storage`, which says `what` the storage is here."""
    # An environment variable keeps a URL with a password off the command line (and `ps`).
    default = os.environ.get(STORAGE_ENV) or None
    help = f"{what} (default: ${STORAGE_ENV}, else mlruns/optuna.journal)"
    add_flag(parser, "--storage", default=default, help=help)
