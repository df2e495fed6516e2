"""`tabslim rollback`: move a registered model's champion alias back, and say so."""

from __future__ import annotations

import argparse

from search.commands.command import Command
from search.commands.flags import MODEL_FORMS, add_flag
from search.commands.models import registered_name

__all__ = ["RollbackCommand"]


class RollbackCommand(Command):
    name = "rollback"
    help = "move NAME@champion back to NAME@previous"
    description = (
        "Move the alias champion back to the version the last promotion replaced "
        "(and previous to the one it leaves); run it again to undo."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flag(parser, "--model", required=True, help=MODEL_FORMS.replace("ALIAS", "champion"))
        add_flag(parser, "--tracking-uri", help="default: mlruns/mlflow.db")

    def run(self, args: argparse.Namespace) -> int:
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
