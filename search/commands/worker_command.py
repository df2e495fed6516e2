"""`tabslim worker`: its flags, its settings and what it prints; the job is
`search.commands.worker`."""

from __future__ import annotations

import argparse

from lightning_modules.tables import check_table_file
from search.commands.command import Command, Settings
from search.commands.flags import add_flag, add_storage
from search.commands.output import worker_state

__all__ = ["WorkerCommand", "WorkerSettings"]


class WorkerSettings(Settings):
    study: str
    storage: str | None = None
    tracking_uri: str | None = None
    data: str | None = None
    devices: str = "auto"
    workers_per_device: int | None = None


class WorkerCommand(Command):
    name = "worker"
    help = "join a study that `tabslim search` started, and run its trials"
    description = (
        "Join an existing study and run its trials until it has its n_trials. "
        "Everything comes from what the study stores (config, data path, split, baseline); "
        "start workers on as many nodes as you like, against a storage they all reach "
        "(PostgreSQL). The coordinator (`tabslim search`) mirrors their trials to MLflow."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flag(parser, "--study", required=True)
        add_storage(parser, "the study's Optuna storage")
        add_flag(
            parser,
            "--tracking-uri",
            help="the study's MLflow tracking server (http://HOST:PORT), through which trials' "
            "networks travel when nodes share no disk (default: the study's)",
        )
        add_flag(
            parser,
            "--data",
            help="the study's table on this node (default: the path the study records); "
            "refused when its contents differ",
        )
        add_flag(parser, "--devices")
        add_flag(parser, "--workers-per-device")

    def run(self, args: argparse.Namespace) -> int:
        options = WorkerSettings.from_args(args)
        if options.data is not None:
            check_table_file(options.data)
        from search.commands.worker import run_workers

        outcomes = run_workers(
            options.study,
            options.storage,
            devices=options.devices,
            workers_per_device=options.workers_per_device,
            tracking_uri=options.tracking_uri,
            data_path=options.data,
        )
        for outcome in outcomes:
            print(
                f"worker on study '{outcome.study}' (sampler seed {outcome.seed}): ran "
                f"{outcome.ran} trials; {worker_state(outcome.complete, outcome.target)}"
            )
        return 0
