"""The launch recipes in configs/deploy/ call tabslim with flags it has, and keep passwords out
of command lines."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from search.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "configs" / "deploy"


def _containers() -> list[dict]:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes_workers.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["Job", "Job"]
    return [c for d in documents for c in d["spec"]["template"]["spec"]["containers"]]


def test_kubernetes_jobs_run_commands_tabslim_accepts() -> None:
    commands = set()
    for container in _containers():
        args = build_parser().parse_args(container["args"])
        commands.add(container["args"][0])
        # The storage URL (and its password) comes from a Secret, not from the args.
        assert "--storage" not in container["args"]
        (env,) = [e for e in container["env"] if e["name"] == "TABSLIM_STORAGE"]
        assert "secretKeyRef" in env["valueFrom"]
        assert args.study == "tabslim-batch"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert commands == {"search", "worker"}


@pytest.mark.parametrize(("task", "command"), [("0", "search"), ("3", "worker")])
def test_the_slurm_array_runs_a_coordinator_then_workers(task: str, command: str) -> None:
    script = DEPLOY / "slurm_search.sh"
    environment = os.environ | {
        "SLURM_ARRAY_TASK_ID": task,
        "SLURM_ARRAY_JOB_ID": "77",
        "TABSLIM": "echo",  # prints the command the task would run
        "TABSLIM_STORAGE": "postgresql+psycopg://tabslim@db/tabslim",
        "TABSLIM_TRACKING": "http://mlflow:5000",
    }
    done = subprocess.run(["bash", str(script)], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    args = shlex.split(done.stdout.strip().splitlines()[-1])
    parsed = build_parser().parse_args(args)
    assert args[0] == command and parsed.study == "tabslim-77"
    assert parsed.tracking_uri == "http://mlflow:5000"


def test_the_slurm_script_refuses_to_start_without_its_servers() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TABSLIM")}
    environment |= {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "1"}
    done = subprocess.run(
        ["bash", str(DEPLOY / "slurm_search.sh")], env=environment, capture_output=True, text=True
    )
    assert done.returncode != 0 and "TABSLIM_STORAGE" in done.stderr
