"""`tabslim sensitivity`: its flags, its settings and what it prints; the job is
`search.commands.sensitivity`."""

from __future__ import annotations

import argparse

from lightning_modules.errors import TabslimInputError
from pruning.choices import CRITERIA, DEFAULT_CRITERION, DEFAULT_EPOCHS, DEFAULT_RATIOS
from search.cluster import redact
from search.commands.command import Command, Settings, listed
from search.commands.flags import add_flag, add_storage

__all__ = ["SensitivityCommand", "SensitivitySettings"]


class SensitivitySettings(Settings):
    ratios: str = listed(DEFAULT_RATIOS)
    criterion: str = DEFAULT_CRITERION
    epochs: str = listed(DEFAULT_EPOCHS)
    tracking_uri: str | None = None

    def lists(self) -> tuple[list[float], list[int]]:
        """The ratios and the fine-tuning epochs, parsed."""
        try:
            ratios = [float(part) for part in self.ratios.split(",")]
            epochs = [int(part) for part in self.epochs.split(",")]
        except ValueError:
            raise TabslimInputError(
                "--ratios and --epochs take comma-separated numbers (like 0.25,0.5 and 0,1), "
                f"but got --ratios {self.ratios!r} --epochs {self.epochs!r}"
            ) from None
        return ratios, epochs


class SensitivityCommand(Command):
    name = "sensitivity"
    help = (
        "prune each prunable group (hidden layer, heads, channels...) of a study's baseline "
        "alone and record the metric drop"
    )
    description = (
        "Prune each prunable group of a study's baseline alone (an MLP's hidden "
        "layers; a ResNet's blocks and residual width; an FT-Transformer's heads, feed-forward "
        "units and token width; a 1D-CNN's channels) at several ratios, with no fine-tuning and "
        "with one epoch by default, and record the drop in the validation metric (positive = "
        "worse). Prints a group x ratio table and the order of groups from least to most "
        "sensitive, and logs the table, a heatmap and the order as a run nested "
        "under the study's MLflow run. Takes a study made by `tabslim search` (its config, data "
        "split and baseline network are stored with it), not a bare model."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flag(parser, "--study", required=True)
        add_storage(parser, "Optuna storage")
        add_flag(
            parser,
            "--ratios",
            SensitivitySettings,
            metavar="R,R,...",
            help="shares of a group's units to remove, each in (0, 1); a group always keeps at "
            "least one unit (default: %(default)s)",
        )
        add_flag(
            parser,
            "--criterion",
            SensitivitySettings,
            metavar="NAME",
            help=f"unit importance criterion deciding which units go: {', '.join(CRITERIA)} "
            "(default: %(default)s)",
        )
        add_flag(
            parser,
            "--epochs",
            SensitivitySettings,
            metavar="E,E,...",
            help="fine-tuning epochs after pruning, each tried separately (default: %(default)s)",
        )
        add_flag(parser, "--tracking-uri", help="MLflow tracking URI (default: the study's)")

    def run(self, args: argparse.Namespace) -> int:
        from search.commands.sensitivity import run_sensitivity

        options = SensitivitySettings.from_args(args)
        ratios, epochs = options.lists()
        outcome = run_sensitivity(
            args.study,
            args.storage,
            ratios=ratios,
            criterion=options.criterion,
            fine_tune_epochs=epochs,
            tracking_uri=options.tracking_uri,
        )
        result = outcome.result
        print(result.format_table())
        print()
        print(f"layer order, least to most sensitive: {','.join(map(str, result.order))}")
        where = (
            f"nested under study run {outcome.parent_run_id}"
            if outcome.parent_run_id
            else "no parent run for the study in this store"
        )
        print(f"MLflow run {outcome.run_id} ({where}) at {redact(outcome.tracking_uri)}")
        return 0
