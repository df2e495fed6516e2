"""The CLI answers `--help` and bad input quickly: torch, Lightning and MLflow load only for work.

Measured as a ratio to `python -c "import pandas"` in the same run, not as an absolute time:
the CLI cannot start without pandas, and a heavy import creeping back (torch alone costs
about twice pandas here) shows as a ratio however busy the machine is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the CLI may cost beyond pandas: Python's start, argparse, pydantic and the settings.
MAX_RATIO = 2.0
MISSING = "no-such-table.csv"

COMMANDS = {
    "--help": (["--help"], 0),
    "search --help": (["search", "--help"], 0),
    "train, missing file": (["train", "--data", MISSING, "--target", "y"], 2),
    "search, missing file": (["search", "--data", MISSING, "--target", "y"], 2),
    "worker, missing file": (["worker", "--study", "s", "--data", MISSING], 2),
    "drift, missing file": (["drift", "--model", "models:/m@champion", "--data", MISSING], 2),
    "retrain, missing file": (["retrain", "--model", "m", "--data", MISSING, "--target", "y"], 2),
}


def _seconds(argv: list[str], expected_code: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert done.returncode == expected_code, done.stderr
    if expected_code == 2:
        # One line; argparse's own errors come after its usage lines, as argparse prints them.
        assert "Traceback" not in done.stderr
        assert "error: " in done.stderr.strip().splitlines()[-1]
    return seconds


def test_help_and_one_line_errors_cost_little_more_than_importing_pandas() -> None:
    pandas = [sys.executable, "-c", "import pandas"]
    # Interleaved, best of three each, so that a busy moment weighs on both sides alike.
    best = dict.fromkeys(COMMANDS, float("inf"))
    baseline = float("inf")
    for _ in range(3):
        baseline = min(baseline, _seconds(pandas, 0))
        for name, (args, code) in COMMANDS.items():
            best[name] = min(best[name], _seconds([sys.executable, "-m", "search", *args], code))
    ratios = {name: round(seconds / baseline, 2) for name, seconds in best.items()}
    slow = {name: ratio for name, ratio in ratios.items() if ratio > MAX_RATIO}
    assert slow == {}, f"slower than {MAX_RATIO}x `import pandas`: {ratios}"


def test_a_missing_file_is_named_before_anything_heavy_is_imported() -> None:
    code = (
        "import sys\n"
        "from search.commands import main\n"
        f"code = main(['train', '--data', '{MISSING}', '--target', 'y'])\n"
        "print(code, sorted(m for m in ('torch', 'mlflow', 'optuna', 'sklearn') if m in "
        "sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "2 []"
    assert MISSING in out.stderr
