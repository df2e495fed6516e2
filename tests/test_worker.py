"""`tabslim worker`: joins a study from what it stores, and refuses what does not fit it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lightning_modules.datasets import load_bundled
from search.cluster import OWNER_ATTR
from search.commands import main, run_search
from search.config import validate

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "tests" / "tiny_search.yaml").read_text())


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "wine.csv"
    load_bundled("wine").to_csv(path, index=False)
    return path


def _raw(tmp_path: Path, csv: Path, **search: object) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["data"] = {"path": str(csv), "target": "target"}
    raw["search"] |= {"study": "joined", "storage": str(tmp_path / "j.journal")} | search
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    return raw


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _study(tmp_path: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    return optuna.load_study(study_name="joined", storage=storage)


@pytest.fixture
def started(tmp_path: Path) -> tuple[Path, Path]:
    """A study of 3 trials on a CSV, finished; then raised to 6 by a search that is not run."""
    csv = _table(tmp_path)
    run_search(validate(_raw(tmp_path, csv, n_trials=3), "test"), progress=False)
    return tmp_path, csv


def test_a_worker_runs_the_trials_the_latest_search_asked_for(
    started: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path, csv = started
    # As a coordinator that was asked for 6 and died right after saying so.
    _study(tmp_path).set_user_attr("tabslim_n_trials", 6)
    code = main(["worker", "--study", "joined", "--storage", str(tmp_path / "j.journal")])
    out = capsys.readouterr().out
    assert code == 0
    assert "ran 3 trials; the study has the 6 trials its latest search asked for" in out
    study = _study(tmp_path)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    # The three new ones carry this worker's stamp, and pruned or not they read the baseline.
    owners = {t.user_attrs.get(OWNER_ATTR) for t in complete[3:]}
    assert len(owners) == 1 and None not in owners
    assert all("metrics" in t.user_attrs for t in complete[3:])
    # Each trial says where it ran, and its latency relative to that host's reference.
    for trial in complete:
        metrics = trial.user_attrs["metrics"]
        assert trial.user_attrs["host"] and trial.user_attrs["cpu_model"]
        latency = metrics["latency_onnxruntime_b64_median_ms"]
        assert metrics["latency_relative"] == pytest.approx(
            latency / metrics["reference_latency_ms"]
        )
    # A later coordinator run mirrors the worker's trials to MLflow.
    raw = _raw(tmp_path, csv, n_trials=6)
    run_search(validate(raw, "test"), progress=False)
    mlflow.set_tracking_uri(raw["tracking"]["uri"])
    runs = mlflow.search_runs(
        experiment_names=["tabslim"], filter_string="tags.`tabslim.kind` = 'trial'",
        output_format="list",
    )  # fmt: skip
    assert sorted(int(r.data.tags["tabslim.trial"]) for r in runs) == [t.number for t in complete]


def test_a_worker_on_a_finished_study_runs_nothing(started: tuple[Path, Path]) -> None:
    tmp_path, _ = started
    before = len(_study(tmp_path).trials)
    assert main(["worker", "--study", "joined", "--storage", str(tmp_path / "j.journal")]) == 0
    assert len(_study(tmp_path).trials) == before


def _one_line_error(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "search", *args], cwd=ROOT, capture_output=True, text=True
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_bad_worker_input_is_one_line_and_leaves_the_study_alone(
    started: tuple[Path, Path],
) -> None:
    tmp_path, csv = started
    journal = tmp_path / "j.journal"
    _study(tmp_path).set_user_attr("tabslim_n_trials", 6)
    before = _digest(journal)
    changed = tmp_path / "changed.csv"
    frame = pd.read_csv(csv)
    frame.loc[0, frame.columns[0]] += 1.0
    frame.to_csv(changed, index=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    base = ["worker", "--storage", str(journal), "--study"]
    assert "differs from the data study 'joined' was made with" in _one_line_error(
        [*base, "joined", "--data", str(changed)]
    )
    assert "empty" in _one_line_error([*base, "joined", "--data", str(empty)])
    assert "no study 'nope'" in _one_line_error([*base, "nope"])
    unreachable = _one_line_error(
        ["worker", "--study", "joined", "--storage", "postgresql://ann:Pw-x81@127.0.0.1:1/none"]
    )
    assert unreachable.startswith("tabslim: error: cannot open storage") and "Pw-x81" not in (
        unreachable
    )
    offline = _one_line_error([*base, "joined", "--tracking-uri", "http://127.0.0.1:1"])
    assert "cannot reach the MLflow tracking server 'http://127.0.0.1:1'" in offline
    assert _digest(journal) == before


def test_a_study_of_a_bundled_dataset_takes_no_data_file(tmp_path: Path) -> None:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["search"] |= {"study": "bundled", "storage": str(tmp_path / "j.journal"), "n_trials": 1}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    run_search(validate(raw, "test"), progress=False)
    line = _one_line_error(
        ["worker", "--study", "bundled", "--storage", str(tmp_path / "j.journal"), "--data",
         str(_table(tmp_path))]
    )  # fmt: skip
    assert "was made on the bundled dataset 'wine'" in line
