"""`tabslim report`: its flags; the job is `search.commands.report`."""

from __future__ import annotations

import argparse

from search.commands.command import Command
from search.commands.flags import add_flag, add_storage

__all__ = ["ReportCommand"]


class ReportCommand(Command):
    name = "report"
    help = "print a study's Pareto front relative to its baseline"
    description = (
        "Print the front of a study as a table relative to the baseline: parameter "
        "ratio, latency ratio and validation metric delta."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flag(parser, "--study", required=True)
        add_storage(parser, "Optuna storage")

    def run(self, args: argparse.Namespace) -> int:
        from search.commands.report import study_report

        print(study_report(args.study, args.storage))
        return 0
