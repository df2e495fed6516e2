"""Every bench script still starts: it imports today's code and builds its flags.

A restructuring that moves a module breaks a benchmark silently otherwise: nothing else runs
them. Each script is run as `python bench/X.py --help` would run it, in this process (torch is
imported once for all of them), and must print its usage and exit 0. The README lists only
scripts that exist.
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_bench_script_imports_and_prints_its_help(
    script: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    # As `python bench/X.py` does: the script's folder first, so that one script can import
    # another (adaptive.py imports approaches.py). The scripts put the repo root first too.
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(script), run_name="__main__")
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_the_shell_bench_scripts_parse() -> None:
    for script in BENCH.glob("*.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script.name


def test_the_readme_names_only_bench_scripts_that_exist() -> None:
    readme = (BENCH.parent / "README.md").read_text()
    named = set(re.findall(r"bench/([\w.-]+\.(?:py|sh))", readme))
    assert named, "the README names no bench script"
    missing = sorted(n for n in named if not (BENCH / n).is_file())
    assert not missing, missing
