"""What `train` and `search` share: the config, the flags that override its data, training and
tracking sections, and the config they make together. Imports nothing heavy (`tabslim --help`).
"""

from __future__ import annotations

import argparse
from typing import Any

from lightning_modules.errors import TabslimInputError
from lightning_modules.tables import check_table_file
from search.commands.command import Settings
from search.commands.flags import add_flag

__all__ = ["DataSettings", "add_data_and_config", "config_from"]


class DataSettings(Settings):
    """What `train` and `search` take beside the config: overrides of its data, training and
    tracking sections (None: the config's value)."""

    config: str | None = None
    data: str | None = None
    dataset: str | None = None
    target: str | None = None
    task: str | None = None
    drop_columns: str | None = None
    time_column: str | None = None
    sample_rows: int | None = None
    seed: int | None = None
    max_epochs: int | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False

    def overrides(self) -> dict[str, Any]:
        """The config fields these flags set, by dotted name."""
        columns = [c for c in self.drop_columns.split(",") if c] if self.drop_columns else None
        return {
            "data.path": self.data,
            "data.dataset": self.dataset,
            "data.target": self.target,
            "data.task": self.task,
            "data.drop_columns": columns,
            "data.time_column": self.time_column,
            "data.sample_rows": self.sample_rows,
            "data.seed": self.seed,
            "training.seed": self.seed,
            "training.max_epochs": self.max_epochs,
            "tracking.uri": self.tracking_uri,
            "tracking.experiment": self.experiment,
        }


def add_data_and_config(parser: argparse.ArgumentParser) -> None:
    """The flags `train` and `search` share: the data, the config and what overrides it."""
    source = parser.add_argument_group("data (overrides the config's data section)")
    add_flag(source, "--data", help="a CSV or Parquet file to train on")
    add_flag(source, "--dataset")
    add_flag(source, "--target", help="the column to predict")
    add_flag(source, "--task")
    add_flag(source, "--drop-columns")
    add_flag(
        source,
        "--time-column",
        help="orders the rows for a split in time (train earliest, test latest); never a feature",
    )
    add_flag(source, "--sample-rows")
    add_flag(parser, "--config", help="YAML config (default: configs/default.yaml)")
    add_flag(parser, "--tracking-uri", help="MLflow tracking URI")
    add_flag(parser, "--experiment")
    add_flag(parser, "--max-epochs")
    add_flag(parser, "--seed")


def config_from(options: DataSettings):  # type: ignore[no-untyped-def]
    """The config `options` name, with their overrides, checked (raises on bad input)."""
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
