"""The CLI answers `--help` and bad input without loading torch, Lightning, MLflow or Optuna.

Checked by what each command imports, not by how long it takes: a heavy import creeping back
shows here on any machine, however busy. How long the start takes, as a ratio to `import
pandas`, is measured in `bench/startup.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = "no-such-table.csv"
# Each costs about as much as pandas or more to import; none is needed to answer these.
HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "optuna", "sklearn", "onnxruntime")

COMMANDS = {
    "--help": (["--help"], 0),
    "search --help": (["search", "--help"], 0),
    "train, missing file": (["train", "--data", MISSING, "--target", "y"], 2),
    "search, missing file": (["search", "--data", MISSING, "--target", "y"], 2),
    "worker, missing file": (["worker", "--study", "s", "--data", MISSING], 2),
    "drift, missing file": (["drift", "--model", "models:/m@champion", "--data", MISSING], 2),
    "retrain, missing file": (["retrain", "--model", "m", "--data", MISSING, "--target", "y"], 2),
    "export, missing model": (["export", "--model", "models:/m@champion"], 2),
}

_PROBE = """
import json, sys
from search.commands import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as stopped:
    code = stopped.code
sys.stdout.flush()
print(json.dumps([code, sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)]),
      file=sys.stderr)
"""


@pytest.mark.parametrize("name", COMMANDS)
def test_help_and_one_line_errors_import_nothing_heavy(name: str) -> None:
    args, expected_code = COMMANDS[name]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    *said, probe = done.stderr.strip().splitlines()
    code, heavy = json.loads(probe)
    assert code == expected_code, done.stderr
    assert heavy == [], f"{name} imported {heavy}"
    if expected_code == 2:
        # One line, no traceback; argparse's own errors come after its usage lines.
        assert "Traceback" not in done.stderr
        assert said and "error: " in said[-1]


def test_a_missing_file_is_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "search", "train", "--data", MISSING, "--target", "y"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert MISSING in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
