"""How long the CLI takes to answer `--help` and bad input, as a ratio to `import pandas`.

The CLI cannot start without pandas, so `python -c "import pandas"` is the floor; torch alone
costs about twice that here. `tests/test_startup.py` checks the cause (no heavy import on these
paths) on any machine; this script measures the effect, which a busy machine blurs: the calls
are interleaved and the best of `--repeats` kept, so that a busy moment weighs on both sides.

Run: `.venv/bin/python bench/startup.py [--repeats 5]`. It prints a Markdown table and asserts
nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MISSING = "no-such-table.csv"
COMMANDS = {
    "--help": ["--help"],
    "search --help": ["search", "--help"],
    "train, missing file": ["train", "--data", MISSING, "--target", "y"],
    "search, missing file": ["search", "--data", MISSING, "--target", "y"],
    "worker, missing file": ["worker", "--study", "s", "--data", MISSING],
    "drift, missing file": ["drift", "--model", "models:/m@champion", "--data", MISSING],
    "retrain, missing file": ["retrain", "--model", "m", "--data", MISSING, "--target", "y"],
}


def _seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    pandas = float("inf")
    best = dict.fromkeys(COMMANDS, float("inf"))
    for _ in range(args.repeats):
        pandas = min(pandas, _seconds([sys.executable, "-c", "import pandas"]))
        for name, argv in COMMANDS.items():
            best[name] = min(best[name], _seconds([sys.executable, "-m", "search", *argv]))
    print(f"`import pandas`: {pandas * 1000:.0f} ms (best of {args.repeats})\n")
    print("| command | best | over `import pandas` |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1000:.0f} ms | {seconds / pandas:.2f}x |")


if __name__ == "__main__":
    main()
