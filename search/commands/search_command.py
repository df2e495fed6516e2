"""`tabslim search`: its flags, its settings and what it prints; the job is
`search.commands.search`."""

from __future__ import annotations

import argparse
from typing import Any

from search.cluster import redact
from search.commands.command import Command
from search.commands.config_flags import DataSettings, add_data_and_config, config_from
from search.commands.flags import add_flag, add_storage, positive_float, positive_int
from search.commands.output import fit
from search.config.choices import SAMPLERS

__all__ = ["SearchCommand", "SearchSettings"]


class SearchSettings(DataSettings):
    n_trials: int | None = None
    timeout: float | None = None
    study: str | None = None
    storage: str | None = None
    workers: int | None = None
    devices: str | None = None
    workers_per_device: int | None = None
    sampler: str | None = None
    # Move <study>@champion even off a version `tabslim retrain` promoted.
    force: bool = False

    def search_overrides(self) -> dict[str, Any]:
        return {
            "search.n_trials": self.n_trials,
            "search.timeout": self.timeout,
            "search.study": self.study,
            "search.storage": self.storage,
            "search.workers": self.workers,
            "search.devices": self.devices,
            "search.workers_per_device": self.workers_per_device,
            "search.seed": self.seed,
            "search.sampler": self.sampler,
        }


class SearchCommand(Command):
    name = "search"
    help = "search per-layer widths for smaller, faster networks (multi-objective Optuna)"
    description = (
        "Train the baseline, then candidates: narrower shapes trained from scratch "
        "and pruning plans applied to the trained baseline and fine-tuned; keep the Pareto front "
        "of validation metric, size and latency in MLflow and register the smallest model "
        "within the accuracy floor as '<study>@champion'. Running it again with "
        "the same study continues it: finished trials are kept and never trained twice."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_data_and_config(parser)
        add_flag(
            parser,
            "--n-trials",
            type=positive_int,
            metavar="N",
            help="trials the study should have in all (the baseline included)",
        )
        add_flag(
            parser,
            "--timeout",
            type=positive_float,
            metavar="S",
            help="stop starting trials after S seconds",
        )
        add_flag(parser, "--study", help="study name (default: tabslim-<data>)")
        add_storage(
            parser,
            "Optuna storage: a journal file path or a database URL, e.g. "
            "postgresql+psycopg://user@host/db with the password in PGPASSWORD or ~/.pgpass",
        )
        add_flag(parser, "--workers", type=positive_int, metavar="N", help="local worker processes")
        add_flag(parser, "--devices")
        add_flag(parser, "--workers-per-device")
        add_flag(
            parser,
            "--sampler",
            metavar="NAME",
            help=f"Optuna sampler: {', '.join(SAMPLERS)} (default: tpe)",
        )
        add_flag(parser, "--quiet")
        add_flag(
            parser,
            "--force",
            action="store_true",
            help="move <study>@champion to this search's champion even off a version that "
            "`tabslim retrain` promoted (which a re-run leaves in place otherwise)",
        )

    def run(self, args: argparse.Namespace) -> int:
        options = SearchSettings.from_args(args)
        config = config_from(options)
        from search.config import override

        config = override(config, "from the command line", **options.search_overrides())
        from search.commands.search import run_search

        outcome = run_search(config, progress=not options.quiet, force=options.force)
        # The same count as the report's table: the searched trials and their INT8 copies.
        copies = outcome.finished - outcome.trials
        counted = f"{outcome.trials} trials" + (
            f" and {copies} INT8 cop{'ies' if copies != 1 else 'y'} ({outcome.finished} finished)"
            if copies > 0
            else ""
        )
        lines = [
            outcome.terminal_report or outcome.report,
            *(f"note: {note}" for note in outcome.notes),
            f"study '{outcome.study}' in {outcome.storage}: {counted}, front of "
            f"{outcome.front_size}; MLflow parent run {outcome.parent_run_id} at "
            f"{redact(config.tracking.uri)}",
        ]
        if outcome.champion_uri is None:
            lines.append(
                f"no champion was registered: {outcome.champion_note or 'nothing finished'}"
            )
        else:
            lines.append(f"champion: {outcome.champion_uri} ({outcome.champion_note})")
        if config.tracking.uri.startswith("sqlite:///"):
            # MLflow 3.17's UI opens experiments in its GenAI view unless the URL asks otherwise.
            lines += [
                f"look at it: mlflow ui --backend-store-uri {config.tracking.uri}",
                f"  then open http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs"
                "?workflowType=machine_learning",
            ]
        print(fit("\n".join(lines)))
        return 0
