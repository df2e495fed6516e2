"""What a `tabslim` command is: its name and help, its flags, its settings and its run, in one
class, as Optuna's `cli.py` keeps a command's `add_arguments` and `take_action` together.

`search.commands.cli` only collects the commands. Each one checks what it can without torch,
Lightning or MLflow (the arguments, the config, that the data file is there) and only then
imports its job inside `run`: `tabslim --help` and a one-line error on bad input come back in
about a second. This module imports neither torch, MLflow nor Optuna.
"""

from __future__ import annotations

import abc
import argparse
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

from lightning_modules.errors import TabslimInputError
from search.config.base import describe_error

__all__ = ["Command", "Settings", "listed"]


class Command(abc.ABC):
    """One `tabslim` command. Its settings class, where it has one, holds every default its
    flags show, so that the help and the run cannot disagree."""

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's flags, in the order its `--help` lists them."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Do the command and print its outcome; the exit code (bad input raises
        `TabslimInputError`, which the CLI turns into one line and exit code 2)."""

    def register(self, commands: Any) -> None:
        """Add the command to the subparsers `commands` (argparse's `add_subparsers()`)."""
        parser = commands.add_parser(self.name, help=self.help, description=self.description)
        self.add_arguments(parser)
        parser.set_defaults(handler=self.run)


def listed(values: tuple[float, ...] | list[float]) -> str:
    """Numbers as the CLI takes them: comma-separated, without trailing zeros."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


class Settings(BaseModel):
    """A command's settings: built from keyword arguments or from parsed flags, checked once.
    Bad values end as one line, as the config's do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, **values: Any) -> Self:
        """The settings from `values`; a bad one raises a one-line `TabslimInputError`."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise TabslimInputError(describe_error(dict(error.errors()[0]))) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace, **renamed: str) -> Self:
        """The settings from parsed flags; `renamed` maps a field to its flag's `dest`."""
        values = {name: getattr(args, renamed.get(name, name)) for name in cls.model_fields}
        # A flag left out parses as None: the setting keeps its default.
        return cls.of(**{name: value for name, value in values.items() if value is not None})
