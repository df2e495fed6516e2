"""A real PostgreSQL server on loopback as the study storage, as on a cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from search.config import validate
from search.search_job import run_search


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run should have installed it")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    # Not under pytest's tmp folder: that one is private to root, and initdb refuses to run as
    # root, so the server runs as the 'postgres' system user in a folder of its own.
    root = Path(tempfile.mkdtemp(prefix="tabslim-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
         str(root / "log"), "-w", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_search_runs_and_resumes_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    raw = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    raw["search"] |= {"study": "on-postgres", "storage": postgres_url, "n_trials": 2}
    run_search(validate(raw, "test"), progress=False)
    raw["search"]["n_trials"] = 3
    started = time.time()
    outcome = run_search(validate(raw, "test"), progress=False)
    study = optuna.load_study(study_name="on-postgres", storage=postgres_url)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert outcome.trials == len(finished) == 3
    # Only the third trial was trained by the second run.
    assert sum(t.datetime_start.timestamp() >= started - 1 for t in finished) == 1
    assert study.user_attrs["tabslim"]["baseline_trial"] == 0
