"""The launch recipes in configs/deploy/ call tabslim with flags it has, and keep passwords out
of command lines."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from search.commands import build_parser

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


def _tabslim_args(command: str) -> list[str]:
    """The arguments after `tabslim` in a shell command line."""
    words = shlex.split(command.split(">>")[0])
    start = next(i for i, w in enumerate(words) if w == "tabslim" or w.endswith("bin/tabslim"))
    return words[start + 1 :]


def test_the_retrain_schedules_run_commands_tabslim_accepts() -> None:
    import ast

    lines = (DEPLOY / "crontab").read_text().splitlines()
    retrain_line, watch_line = [text for text in lines if text and not text.startswith("#")]
    commands = [_tabslim_args(" ".join(retrain_line.split()[5:]))]
    # The hourly label-free watch between retrains: a drift report of the champion.
    watch = build_parser().parse_args(_tabslim_args(" ".join(watch_line.split()[5:])))
    assert watch.command == "drift" and watch.model == "models:/churn@champion"
    (job,) = list(yaml.safe_load_all((DEPLOY / "kubernetes_retrain_cronjob.yaml").read_text()))
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    commands.append(job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"])
    dag = ast.parse((DEPLOY / "airflow_retrain_dag.py").read_text())
    (retrain,) = [
        node.value for node in ast.walk(dag)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "RETRAIN"
    ]  # fmt: skip
    commands.append(_tabslim_args(ast.literal_eval(retrain).replace("{{ ds }}", "2026-01-01")))
    for args in commands:
        parsed = build_parser().parse_args(args)
        assert args[0] == "retrain" and parsed.model == "churn" and parsed.target == "churned"
