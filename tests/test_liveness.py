"""Trials of killed processes are failed and queued again: real processes, real `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from search.cluster import (
    DROPPED_ATTR,
    OWNER_ATTR,
    ProcessLock,
    drop_waiting_trials,
    lock_folder,
    recover_dead_trials,
)
from search.commands.search import _drop_leftover_retries

ROOT = Path(__file__).resolve().parent.parent


def _journal_study(path: Path, name: str = "s") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def _holder(journal: Path) -> subprocess.Popen[str]:
    """A process that takes a lock, starts one trial stamped with it, and waits to be killed."""
    script = textwrap.dedent(
        f"""
        import sys, time, optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from search.cluster import OWNER_ATTR, ProcessLock, lock_folder
        journal = {str(journal)!r}
        lock = ProcessLock(lock_folder(__import__("pathlib").Path(journal)))
        study = optuna.load_study(
            study_name="s", storage=JournalStorage(JournalFileBackend(journal))
        )
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr(OWNER_ATTR, lock.owner)
        print(trial.number, flush=True)
        time.sleep(600)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def test_a_killed_owners_trial_is_failed_and_queued_again(tmp_path: Path) -> None:
    journal = tmp_path / "j.journal"
    study = _journal_study(journal)
    study.enqueue_trial({"x": 0.25}, user_attrs={"baseline": True})
    holder = _holder(journal)
    try:
        assert holder.stdout is not None
        number = int(holder.stdout.readline())
        # This process is alive and owns a RUNNING trial too: it must be left alone.
        mine = ProcessLock(lock_folder(journal))
        own = study.ask()
        own.set_user_attr(OWNER_ATTR, mine.owner)
        assert recover_dead_trials(study, lock_folder(journal), 2) == []
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert recover_dead_trials(study, lock_folder(journal), 2) == [number]
    finally:
        holder.kill()
    trials = study.get_trials()
    assert trials[number].state == TrialState.FAIL
    assert trials[own.number].state == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    # Same parameters and queued attributes; none of the dead run's owner stamp.
    assert retry.params == {"x": 0.25}
    assert retry.user_attrs == {"baseline": True}
    assert retry.system_attrs["retry_history"] == [number]
    assert recover_dead_trials(study, lock_folder(journal), 2) == []
    mine.release()


def test_retries_stop_at_the_limit(tmp_path: Path) -> None:
    journal = tmp_path / "j.journal"
    study = _journal_study(journal)
    distributions = {"x": FloatDistribution(0.0, 1.0)}
    # A trial already retried twice, whose owner (never locked, so dead) left it RUNNING.
    study.add_trial(
        optuna.create_trial(
            state=TrialState.RUNNING, params={"x": 0.5}, distributions=distributions,
            user_attrs={OWNER_ATTR: "gone-1"}, system_attrs={"retry_history": [0, 1]},
        )
    )  # fmt: skip
    assert recover_dead_trials(study, lock_folder(journal), max_retries=2) == [0]
    assert study.get_trials(states=(TrialState.WAITING,)) == []
    assert study.get_trials()[0].state == TrialState.FAIL


def _study_with_a_late_retry(journal: Path, complete: int) -> tuple[optuna.Study, int]:
    """`complete` finished trials, one a worker still runs, and a retry queued for a dead one."""
    study = _journal_study(journal)
    for value in range(complete):
        study.add_trial(
            optuna.create_trial(
                params={"x": value / 10},
                distributions={"x": FloatDistribution(0.0, 1.0)},
                value=float(value),
            )
        )
    running = study.ask({"x": FloatDistribution(0.0, 1.0)})
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0.0, 1.0)},
            system_attrs={"failed_trial": 0, "retry_history": [0]},
        )
    )
    return study, running.number


def test_a_study_that_has_its_trials_ends_with_nothing_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study, running = _study_with_a_late_retry(tmp_path / "j.journal", complete=3)
    _drop_leftover_retries(study, target=3)
    trials = study.get_trials()
    assert study.get_trials(states=(TrialState.WAITING,)) == []
    dropped = trials[-1]
    assert dropped.state == TrialState.FAIL and "3 trials" in dropped.system_attrs[DROPPED_ATTR]
    # The trial a worker runs is not touched, and the finished ones keep their values.
    assert trials[running].state == TrialState.RUNNING
    assert [t.value for t in trials[:3]] == [0.0, 1.0, 2.0]
    assert f"dropped 1 queued trial(s) ({dropped.number})" in capsys.readouterr().err


def test_a_study_short_of_its_trials_keeps_its_queue_for_the_next_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study, _ = _study_with_a_late_retry(tmp_path / "j.journal", complete=2)
    _drop_leftover_retries(study, target=3)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert capsys.readouterr().err == ""
    # Dropping by hand fails it only once: a second call finds nothing waiting.
    assert len(drop_waiting_trials(study, "by hand")) == 1
    assert drop_waiting_trials(study, "by hand") == []


def _search_command(config: Path, journal: Path, tracking: str) -> list[str]:
    return [
        sys.executable, "-m", "search", "search", "--config", str(config), "--quiet",
        "--storage", str(journal), "--tracking-uri", tracking, "--study", "killed",
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_9_of_every_process_then_a_rerun_leaves_n_complete_trials_mirrored_once(
    tmp_path: Path,
) -> None:
    raw = yaml.safe_load((ROOT / "tests" / "tiny_search.yaml").read_text())
    # Trials of a second or more, so that the kill finds some RUNNING.
    raw["data"]["dataset"] = "digits"
    raw["training"]["max_epochs"] = 15
    raw["search"] |= {"n_trials": 8, "workers": 3}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    journal = tmp_path / "j.journal"
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    first = subprocess.Popen(
        _search_command(config, journal, tracking), cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    storage = JournalStorage(JournalFileBackend(str(journal)))
    deadline = time.monotonic() + 240
    running: list[int] = []
    while time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
        except KeyError:
            continue
        states = [t.state for t in study.get_trials(deepcopy=False)]
        running = [i for i, s in enumerate(states) if s == TrialState.RUNNING]
        if states.count(TrialState.COMPLETE) >= 2 and running:
            break
    # The coordinator and its workers, all at once, as a node that loses power.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert running, "the search ended before it could be killed mid-trial"
    study = optuna.load_study(study_name="killed", storage=storage)
    assert any(t.state == TrialState.RUNNING for t in study.get_trials())

    rerun = subprocess.run(
        _search_command(config, journal, tracking), cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name="killed", storage=storage)
    states = [t.state for t in study.get_trials()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    complete = [t.number for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert 8 <= len(complete) <= 8 + 2  # workers may finish a trial each after the 8th
    mlflow.set_tracking_uri(tracking)
    runs = mlflow.search_runs(
        experiment_names=["tabslim"], filter_string="tags.`tabslim.kind` = 'trial'",
        output_format="list",
    )  # fmt: skip
    mirrored = [int(r.data.tags["tabslim.trial"]) for r in runs if r.info.status == "FINISHED"]
    assert sorted(mirrored) == sorted(complete)
    assert all(r.info.status != "RUNNING" for r in runs)
