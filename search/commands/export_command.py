"""`tabslim export`: its flags and what it prints; the job is `search.commands.export`."""

from __future__ import annotations

import argparse

from search.commands.command import Command
from search.commands.flags import add_flag

__all__ = ["ExportCommand"]


class ExportCommand(Command):
    name = "export"
    help = "write a logged model as one self-contained ONNX file (preprocessing inside)"
    description = (
        "Write a logged tabslim model (the champion, or any trial's) as a single "
        "ONNX file that takes the raw columns, one input per column named after it, shape "
        "[N, 1]: double for numbers (NaN is missing), string for categories ('<missing>' is "
        "missing). Its outputs are the prediction (class labels for a classifier), then the "
        "class probabilities or the anomaly score; the file's metadata describes both. It runs "
        "in ONNX Runtime from any language, with no Python and no tabslim."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flag(parser, "--model", required=True, metavar="URI", help="e.g. models:/NAME@champion")
        add_flag(
            parser,
            "--out",
            required=True,
            metavar="FILE",
            help="the ONNX file to write, e.g. model.onnx",
        )
        add_flag(parser, "--tracking-uri", help="MLflow tracking URI (default: mlruns/mlflow.db)")

    def run(self, args: argparse.Namespace) -> int:
        from search.commands.export import run_export
        from search.config import DEFAULT_TRACKING_URI

        outcome = run_export(
            args.model, args.out, tracking_uri=args.tracking_uri or DEFAULT_TRACKING_URI
        )
        inputs = ", ".join(f"{name} ({kind})" for name, kind in outcome.inputs.items())
        print(f"wrote {outcome.path}: one ONNX Runtime call on the raw columns")
        print(f"  inputs, each [N, 1]: {inputs}")
        print(f"  outputs: {', '.join(outcome.outputs)}")
        if outcome.composed:
            print(
                "  (the model predates the served graph; it was composed from its network and "
                "preprocessing)"
            )
        return 0
