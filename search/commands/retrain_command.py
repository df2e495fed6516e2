"""`tabslim retrain`: its flags, its settings and what it prints; the job is
`search.commands.retrain`."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import model_validator

from lightning_modules.tables import check_table_file
from search.commands.command import Command, Settings
from search.commands.flags import MODEL_FORMS, add_flag
from search.commands.models import registered_name
from search.commands.output import fit

__all__ = ["RetrainCommand", "RetrainSettings"]


class RetrainSettings(Settings):
    """How `tabslim retrain` decides and trains; the flags' names are in the messages."""

    tracking_uri: str | None = None
    time_column: str | None = None
    config_path: str | None = None
    dry_run: bool = False
    force: bool = False
    holdout: float = 0.3
    min_gain: float = 0.0
    tolerance: float = 0.01
    drift_threshold: float = 0.1
    reference_share: float = 0.0
    search_trials: int = 0
    # The training flags `train` has; None: the config's.
    experiment: str | None = None
    max_epochs: int | None = None
    seed: int | None = None

    def training_config(self) -> Any:
        """The config (`config_path`, else the default) with the training flags applied."""
        from search.config import load_config, override

        return override(
            load_config(self.config_path),
            "from the command line",
            **{
                "tracking.experiment": self.experiment,
                "training.max_epochs": self.max_epochs,
                "training.seed": self.seed,
                "data.seed": self.seed,
            },
        )

    @model_validator(mode="after")
    def _check(self) -> RetrainSettings:
        holdout, tolerance, drift_threshold = self.holdout, self.tolerance, self.drift_threshold
        if not (0.05 <= holdout <= 0.8 and tolerance >= 0 and drift_threshold > 0):
            raise ValueError(
                f"--holdout must be in [0.05, 0.8], --tolerance at least 0 and --drift-threshold "
                f"above 0, but got {holdout=}, {tolerance=}, {drift_threshold=}"
            )
        reference_share, search_trials = self.reference_share, self.search_trials
        if not (0 <= reference_share <= 1 and 0 <= search_trials <= 200):
            raise ValueError(
                f"--reference-share must be in [0, 1] and --search in [0, 200], but got "
                f"{reference_share=}, {search_trials=}"
            )
        return self


# The flags only `retrain` has, each with its default from RetrainSettings.
_DECISION_FLAGS: dict[str, dict[str, Any]] = {
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
}


class RetrainCommand(Command):
    name = "retrain"
    help = "retrain the registered champion on new rows when they call for it"
    description = (
        "Check NAME@champion against new rows (realized metric, drift); when it "
        "needs it (or with --force), train challengers on a window of the rows (the "
        "champion's widths from scratch, and the champion fine-tuned), score all on a holdout "
        "that lies after the window in time, and promote a challenger only when its paired "
        "95% interval clears --min-gain within the champion's size and latency. Safe to "
        "schedule: the same data twice changes nothing, and two runs at once promote at most "
        "once. Exit code 0 for every normal outcome."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        champion_forms = MODEL_FORMS.replace("ALIAS", "champion")
        add_flag(parser, "--model", required=True, help=champion_forms)
        add_flag(parser, "--data", required=True, help="new labelled rows")
        add_flag(parser, "--target", required=True)
        add_flag(parser, "--time-column", help="orders window and holdout")
        add_flag(parser, "--config", help="training settings (default: configs/default.yaml)")
        add_flag(parser, "--tracking-uri", help="default: the config's, mlruns/mlflow.db")
        # The training flags `train` has, for the challengers (they override the config).
        add_flag(parser, "--experiment")
        add_flag(
            parser, "--max-epochs", help="the challengers' training epochs (default: the config's)"
        )
        add_flag(parser, "--seed")
        for flag, declared in _DECISION_FLAGS.items():
            add_flag(parser, flag, RetrainSettings, **declared)
        add_flag(
            parser,
            "--search",
            type=int,
            metavar="N",
            default=RetrainSettings.model_fields["search_trials"].default,
            help="also train a challenger found by an N-trial search seeded with the champion's "
            "study front and bounded by its widths (default: %(default)s, none)",
        )

    def run(self, args: argparse.Namespace) -> int:
        options = RetrainSettings.from_args(args, config_path="config", search_trials="search")
        name = registered_name(args.model)
        check_table_file(args.data)
        from search.commands.retrain import run_retrain

        outcome = run_retrain(name, args.data, args.target, options)
        for line in outcome.lines:
            print(fit(line))
        # One line, which schedulers' logs and scripts read as the outcome.
        print(f"{outcome.action}: {'; '.join(outcome.reasons)}")
        print(f"{name}@champion is version {outcome.champion}")
        if outcome.run_id:
            print(f"MLflow run {outcome.run_id}")
        return 0
