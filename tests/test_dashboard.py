"""optuna-dashboard, as the README opens it, shows the study's objectives by name."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from loopback import free_port

from lightning_modules.task import Task
from search.config import validate
from search.study import StudySettings, open_storage, open_study

DASHBOARD = Path(sys.executable).parent / "optuna-dashboard"


def test_the_dashboard_names_the_three_objectives(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    config = validate({"data": {"dataset": "wine"}}, "test")
    settings = StudySettings.for_search(
        config, task=Task.MULTICLASS, data="wine", target="target", trials_dir=str(tmp_path)
    )
    open_study("named", open_storage(str(journal)), str(journal), config, settings)
    port = free_port()
    server = subprocess.Popen(
        [str(DASHBOARD), str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0?after=0") as r:
                    answer = json.load(r)
            except OSError:
                time.sleep(0.3)
        assert answer is not None, "optuna-dashboard did not answer within 60 s"
        assert answer["name"] == "named"
        assert answer["objective_names"] == [
            "val_accuracy", "parameters", "latency_onnxruntime_b1024_median_ms"
        ]  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
