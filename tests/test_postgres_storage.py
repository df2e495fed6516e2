"""A real PostgreSQL server on loopback as the study storage, as on a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import yaml
from loopback import PG_PASSWORD as PASSWORD

from search.commands import run_search
from search.config import validate


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


def _tabslim(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"} | env
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        capture_output=True, text=True, env=environment, timeout=600,
    )  # fmt: skip


def _files_holding(root: Path, secret: str) -> list[str]:
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_storage_password_reaches_no_output_mlflow_or_stored_config(
    tmp_path: Path, postgres_url: str
) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    config = tmp_path / "tiny.yaml"
    raw = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    raw["search"] |= {"study": "secret-study", "n_trials": 2}
    config.write_text(yaml.safe_dump(raw))
    done = _tabslim(
        ["search", "--config", str(config), "--storage", postgres_url, "--tracking-uri",
         tracking, "--quiet"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    assert "postgres:***@127.0.0.1" in done.stdout
    # MLflow's store and artifacts, the trial folders, any log: no file holds the password.
    assert _files_holding(tmp_path, PASSWORD) == []
    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs, "the search logged no runs"
    for run in runs:
        assert PASSWORD not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    stored = optuna.load_study(study_name="secret-study", storage=postgres_url)
    assert PASSWORD not in json.dumps(stored.user_attrs)
    assert stored.user_attrs["tabslim"]["config"]["search"]["storage"] == (
        postgres_url.replace(f":{PASSWORD}@", "@")
    )


def test_password_from_pgpassword_or_the_environment(tmp_path: Path, postgres_url: str) -> None:
    bare = postgres_url.replace(f":{PASSWORD}@", "@")
    raw = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    raw["search"] |= {"study": "env-study", "storage": postgres_url, "n_trials": 2}
    run_search(validate(raw, "test"), progress=False)
    # libpq reads PGPASSWORD itself: the URL on the command line carries no password.
    by_pgpassword = _tabslim(
        ["report", "--study", "env-study", "--storage", bare], PGPASSWORD=PASSWORD
    )
    assert by_pgpassword.returncode == 0, by_pgpassword.stderr
    assert "baseline" in by_pgpassword.stdout
    # The whole URL in TABSLIM_STORAGE keeps it off the command line and out of `ps`.
    by_variable = _tabslim(["report", "--study", "env-study"], TABSLIM_STORAGE=postgres_url)
    assert by_variable.returncode == 0, by_variable.stderr
    assert by_variable.stdout == by_pgpassword.stdout
    assert PASSWORD not in by_variable.stdout + by_variable.stderr


def test_a_wrong_password_is_one_line_without_either_password(postgres_url: str) -> None:
    wrong = postgres_url.replace(PASSWORD, "Wrong-7d1e0b-pw")
    done = _tabslim(["report", "--study", "env-study", "--storage", wrong])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("tabslim: error: cannot open storage")
    assert "password authentication failed" in lines[0]
    assert "Wrong-7d1e0b-pw" not in done.stderr + done.stdout
    assert PASSWORD not in done.stderr + done.stdout
