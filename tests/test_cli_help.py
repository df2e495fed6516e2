"""`tabslim --help` and every command's `--help` read exactly as the goldens in tests/cli_help/.

A flag, a default or a help line that changes shows here as a diff. A deliberate change
rewrites the goldens: `TABSLIM_WRITE_HELP=1 pytest tests/test_cli_help.py`, then review the
diff. argparse wraps at the terminal's width, so the width is fixed here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from search.commands import build_parser, main

GOLDENS = Path(__file__).resolve().parent / "cli_help"
COMMANDS = (
    "train",
    "search",
    "worker",
    "drift",
    "retrain",
    "rollback",
    "report",
    "sensitivity",
    "export",
)


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    return out.getvalue()


def test_the_goldens_cover_every_command() -> None:
    subparsers = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    assert tuple(subparsers[0].choices) == COMMANDS


@pytest.mark.parametrize("command", ("tabslim", *COMMANDS))
def test_help_reads_as_its_golden(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    # The storage flag's default comes from this variable; unset, the help says so.
    monkeypatch.delenv("TABSLIM_STORAGE", raising=False)
    text = _help(["--help"] if command == "tabslim" else [command, "--help"])
    golden = GOLDENS / f"{command}.txt"
    if os.environ.get("TABSLIM_WRITE_HELP") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def _surface(parser: argparse.ArgumentParser) -> list[dict[str, object]]:
    """Each flag as the parser reads it: what the help text does not show (defaults, types)."""
    return [
        {
            "flags": action.option_strings,
            "dest": action.dest,
            "default": repr(action.default),
            "required": action.required,
            "type": getattr(action.type, "__name__", repr(action.type)),
            "choices": repr(action.choices) if action.choices is not None else None,
            "action": type(action).__name__,
        }
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
    ]


def test_flags_parse_as_their_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TABSLIM_STORAGE", raising=False)
    subparsers = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    surface = {name: _surface(parser) for name, parser in subparsers.choices.items()}
    golden = GOLDENS / "flags.json"
    if os.environ.get("TABSLIM_WRITE_HELP") == "1":
        golden.write_text(json.dumps(surface, indent=1) + "\n")
    assert surface == json.loads(golden.read_text())
