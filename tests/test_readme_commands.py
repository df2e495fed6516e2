"""The README's commands, as a new user would copy them: every `tabslim <command> --flag` it
shows (in code blocks and inline) names a command and flags that the command's `--help`
lists, and parses as a whole; the hint a sampled search prints parses too."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from search.commands import main
from search.commands.cli import build_parser
from search.config import validate
from search.inputs import load_data

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands(text: str) -> list[tuple[str, bool]]:
    """Each `tabslim ...` command: code-block lines (continuations joined), whole, and inline
    code spans, which prose may cut short; each cut at a comment or a shell operator."""
    found = []
    joined = re.sub(r"\\\n\s*", " ", text)
    # Every fenced block is consumed, whatever its language, so that a fence never pairs with
    # the closing fence of another block; shell blocks hold commands.
    for language, block in re.findall(r"```(\w*)\n(.*?)```", joined, re.DOTALL):
        if language in ("", "bash", "sh"):
            found += [(line, True) for line in block.splitlines() if "tabslim " in line]
    found += [(span, False) for span in re.findall(r"`([^`\n]*\btabslim [a-z][^`\n]*)`", joined)]
    commands = []
    for line, whole in found:
        line = re.split(r"\s#|\s\|\s|&&|;|>>", line)[0]
        start = re.search(r"(?:\S*/)?tabslim (?=[a-z])", line)
        if start is not None and not line.lstrip().startswith("make "):
            commands.append((line[start.end() :].strip(), whole))
    return commands


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([command, "--help"])
    return out.getvalue()


COMMANDS = _commands(README)


def test_the_readme_shows_commands_of_every_kind() -> None:
    shown = {c.split()[0] for c, whole in COMMANDS if whole}
    assert {"train", "search", "report", "worker", "drift", "retrain", "rollback"} <= shown


@pytest.mark.parametrize(("line", "whole"), COMMANDS)
def test_a_readme_command_uses_flags_its_help_lists_and_parses(line: str, whole: bool) -> None:
    tokens = [t for t in shlex.split(line.replace("[", " ").replace("]", " ")) if t != "..."]
    command, flags = tokens[0], [t.split("=")[0] for t in tokens if t.startswith("--")]
    listed = set(re.findall(r"--[a-z][a-z-]*", _help(command)))
    assert not set(flags) - listed, f"{line}: {sorted(set(flags) - listed)} not in --help"
    if "..." in line or not whole:
        return  # an elided command, or prose that names a command and a flag or two
    with contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(tokens)  # exits 2 on a missing or unknown argument


def test_the_sampled_search_hint_is_a_command_that_parses(tmp_path: Path) -> None:
    rows = pd.DataFrame({"x": range(200), "z": [i % 7 for i in range(200)]})
    rows["y"] = rows["x"] % 2
    rows.to_csv(tmp_path / "t.csv", index=False)
    config = validate(
        {"data": {"path": str(tmp_path / "t.csv"), "target": "y", "sample_rows": 100}}, "test"
    )
    (note,) = [n for n in load_data(config).notes if "sample_rows" in n]
    (hint,) = re.findall(r"`tabslim (retrain [^`]*)`", note)
    args = build_parser().parse_args(shlex.split(hint.replace("STUDY", "big")))
    assert args.model == "big" and args.force and args.target == "y"


def test_retrain_takes_the_training_flags_train_has() -> None:
    from search.commands.retrain_command import RetrainSettings

    args = build_parser().parse_args(
        ["retrain", "--model", "m", "--data", "d.csv", "--target", "y", "--max-epochs", "2",
         "--seed", "5", "--experiment", "later"]
    )  # fmt: skip
    settings = RetrainSettings.from_args(args, config_path="config", search_trials="search")
    config = settings.training_config()
    assert config.training.max_epochs == 2 and config.training.seed == 5
    assert config.data.seed == 5 and config.tracking.experiment == "later"
