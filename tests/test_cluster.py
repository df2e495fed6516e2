"""A search across "nodes" that share no disk: PostgreSQL for the study, `mlflow server` (with a
PostgreSQL backend store and proxied artifacts) for runs and networks, and a coordinator and a
worker in folders of their own. All real, all on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import optuna
import psycopg
import pytest
import yaml
from loopback import PG_PASSWORD, free_port, wait_for_http
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from lightning_modules.datasets import load_bundled
from search.cluster import OWNER_ATTR

ROOT = Path(__file__).resolve().parent.parent
TABSLIM = [sys.executable, "-m", "search"]


@pytest.fixture(scope="module")
def tracking_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on loopback, its runs in a PostgreSQL database, its artifacts proxied."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS mlflow_store")
        connection.execute("CREATE DATABASE mlflow_store")
    parts = urlsplit(postgres_url)
    backend = parts._replace(path="/mlflow_store").geturl()
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", server, timeout=180)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_a_coordinator_and_a_worker_with_no_shared_disk(
    tmp_path: Path, postgres_url: str, tracking_server: str
) -> None:
    raw = yaml.safe_load((ROOT / "tests" / "tiny_search.yaml").read_text())
    # Trials of a second or two, so that the worker, starting a few seconds late, gets some.
    raw["data"]["dataset"] = "digits"
    raw["training"]["max_epochs"] = 10
    raw["search"] |= {"n_trials": 12, "study": "cluster"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    coordinator_dir, worker_dir = tmp_path / "node-a", tmp_path / "node-b"
    coordinator_dir.mkdir()
    worker_dir.mkdir()
    where = ["--storage", postgres_url, "--tracking-uri", tracking_server]
    coordinator = subprocess.Popen(
        [*TABSLIM, "search", "--config", str(config), "--quiet", *where],
        cwd=coordinator_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Started once the study exists (a scheduler's "after" dependency); it then waits for the
    # coordinator's baseline.
    deadline = time.monotonic() + 120
    while "cluster" not in {s.study_name for s in optuna.get_all_study_summaries(postgres_url)}:
        assert time.monotonic() < deadline and coordinator.poll() is None, coordinator.stderr
        time.sleep(0.5)
    worker = subprocess.run(
        [*TABSLIM, "worker", "--study", "cluster", *where],
        cwd=worker_dir, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out, err = coordinator.communicate(timeout=600)
    assert coordinator.returncode == 0, err[-3000:]
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "ran 0 trials" not in worker.stdout, worker.stdout
    for text in (out, err, worker.stdout, worker.stderr):
        assert PG_PASSWORD not in text

    study = optuna.load_study(study_name="cluster", storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 12
    assert all(t.state != TrialState.RUNNING for t in study.trials)
    coordinator_owner = f"{os.uname().nodename}-{coordinator.pid}"
    by_worker = [t for t in complete if t.user_attrs[OWNER_ATTR] != coordinator_owner]
    assert by_worker, "no trial was run by the worker"
    # The worker fetched the baseline from the server into its own cache; no folder in common.
    baseline = worker_dir / "mlruns" / "studies" / "cluster" / "trial-0"
    assert (baseline / "row_scores.npz").is_file()

    client = MlflowClient(tracking_server)
    mlflow.set_tracking_uri(tracking_server)
    mlflow.set_registry_uri(tracking_server)
    runs = mlflow.search_runs(
        experiment_names=["tabslim"], filter_string="tags.`tabslim.study` = 'cluster'",
        output_format="list",
    )  # fmt: skip
    trials = [
        int(r.data.tags["tabslim.trial"]) for r in runs if r.data.tags["tabslim.kind"] == "trial"
    ]
    assert sorted(trials) == sorted(t.number for t in study.trials)
    (parent,) = [r for r in runs if r.data.tags["tabslim.kind"] == "study"]
    assert parent.info.status == "FINISHED"
    stored = {a.path for a in client.list_artifacts(parent.info.run_id, "networks")}
    assert {f"networks/trial-{t.number}" for t in complete if "repeat_of" not in t.user_attrs} <= (
        stored
    )
    # The champion, whoever trained it, is registered and predicts raw rows.
    model = mlflow.pyfunc.load_model("models:/cluster@champion")
    rows = load_bundled("digits").drop(columns=["target"]).head(5)
    assert len(model.predict(rows)) == 5
    # A third node scans the baseline's sensitivity, fetching it from the server too.
    third = tmp_path / "node-c"
    third.mkdir()
    scan = subprocess.run(
        [*TABSLIM, "sensitivity", "--study", "cluster", *where, "--ratios", "0.5", "--epochs", "0"],
        cwd=third, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr[-3000:]
    assert "layer order, least to most sensitive" in scan.stdout
    assert (third / "mlruns" / "studies" / "cluster" / "trial-0" / "weights.pt").is_file()
    # `tabslim train` logs to the same server from yet another folder.
    trained = subprocess.run(
        [*TABSLIM, "train", "--dataset", "wine", "--tracking-uri", tracking_server],
        cwd=third, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_id,) = re.findall(r"^run (\w+) in experiment", trained.stdout, re.MULTILINE)
    assert client.get_run(run_id).info.status == "FINISHED"
    for node in (coordinator_dir, worker_dir, third):
        for path in node.rglob("*"):
            assert not path.is_file() or PG_PASSWORD.encode() not in path.read_bytes(), path
