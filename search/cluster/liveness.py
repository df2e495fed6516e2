"""Trials of dead processes: failed and queued again, on every storage.

An RDB storage (PostgreSQL) has Optuna's heartbeats: a trial whose heartbeat stops is failed
by the next process that starts a trial, and `RetryFailedTrialCallback` queues it again.

Optuna's journal file storage (the local default) has no heartbeat. Here each tabslim process
holds an OS lock on a file of its own for as long as it lives, and stamps every trial it starts
with that lock's name. A RUNNING trial whose owner's lock can be taken belongs to a process
that is gone (the kernel frees a lock when its holder dies, `kill -9` included): it is failed
and queued again, with the same retry limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "DROPPED_ATTR",
    "OWNER_ATTR",
    "ProcessLock",
    "RetryDeadTrial",
    "drop_waiting_trials",
    "owned_by",
    "recover_dead_trials",
    "retry_callback",
    "wait_for_running",
]

OWNER_ATTR = "tabslim_owner"
# On a queued trial dropped unrun because the study already had its trials: why.
DROPPED_ATTR = "tabslim_dropped"
# A RUNNING trial with no owner stamp is older than this only if its process died in the
# moment between creating the trial and stamping it.
_UNSTAMPED_GRACE = timedelta(minutes=2)


# What a queued trial carries from the start: the rest is the dead run's, and is redone.
_QUEUED_ATTRS = ("baseline",)


class RetryDeadTrial:
    """Queue a dead trial again with its parameters, at most `max_retries` times.

    Optuna's `RetryFailedTrialCallback`, but the new trial carries none of the dead run's user
    attributes: its owner stamp would mark the retry dead before its new owner stamps it.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retries:
            return
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={k: trial.user_attrs[k] for k in _QUEUED_ATTRS if k in trial.user_attrs},
                system_attrs={
                    "failed_trial": trial.number,
                    "retry_history": history,
                    # A queued trial's parameters (the baseline's, the ladder's) that it had not
                    # drawn yet when it died: without them, a retry would draw new ones.
                    "fixed_params": trial.system_attrs.get("fixed_params", {}),
                },
            )
        )


def retry_callback(max_retries: int) -> RetryDeadTrial:
    return RetryDeadTrial(max_retries)


class ProcessLock:
    """An exclusive lock on `folder/<id>.lock`, held until `release` or the process ends."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.owner = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.folder = folder
        self._file: IO[bytes] | None = (folder / f"{self.owner}.lock").open("wb")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            (self.folder / f"{self.owner}.lock").unlink(missing_ok=True)


def _owner_alive(folder: Path, owner: str) -> bool:
    path = folder / f"{owner}.lock"
    if not path.exists():
        return False
    with path.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    path.unlink(missing_ok=True)
    return False


def lock_folder(journal: Path) -> Path:
    """Where the processes of a journal file keep their locks: beside the journal."""
    return journal.with_name(journal.name + ".owners")


def recover_dead_trials(
    study: optuna.Study, locks: Path | None, max_retries: int, *, now: datetime | None = None
) -> list[int]:
    """Fail the RUNNING trials of dead processes and queue them again; returns their numbers.

    On an RDB storage this is Optuna's heartbeat check; on a journal, the lock check above.
    """
    storage = study._storage  # noqa: SLF001 - Optuna's public API has no state setter
    if not isinstance(storage, JournalStorage):
        optuna.storages.fail_stale_trials(study)
        return []
    assert locks is not None, "a journal storage has a lock folder"
    now = now or datetime.now()
    retry = retry_callback(max_retries)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR)
        if owner is not None:
            dead = not _owner_alive(locks, str(owner))
        else:
            started = trial.datetime_start or now
            dead = now - started > _UNSTAMPED_GRACE
        if not dead:
            continue
        with contextlib.suppress(UpdateFinishedTrialError):
            # Another live process may have recovered it first; then this one does nothing.
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):  # noqa: SLF001
                retry(study, storage.get_trial(trial._trial_id))  # noqa: SLF001
                recovered.append(trial.number)
    return recovered


def wait_for_running(
    study: optuna.Study, locks: Path | None, max_retries: int, *, poll: float = 1.0
) -> None:
    """Return once no trial is RUNNING; dead processes' trials are recovered meanwhile."""
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        recover_dead_trials(study, locks, max_retries)
        time.sleep(poll)


def drop_waiting_trials(study: optuna.Study, reason: str) -> list[int]:
    """Fail every queued (WAITING) trial, marked with `reason`; returns their numbers.

    For a search that has what it asked for: a retry queued for a trial that died late, say,
    which no process would run now and the next `tabslim search` would run one trial past its
    target. Each is checked to be still WAITING just before: a worker on another node that
    popped it a moment earlier keeps it (the check narrows that race; it cannot close it, as
    Optuna's storages have no compare-and-set on a trial's state).
    """
    storage = study._storage  # noqa: SLF001 - Optuna's public API has no state setter
    dropped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        with contextlib.suppress(UpdateFinishedTrialError):
            if storage.get_trial(trial._trial_id).state != TrialState.WAITING:  # noqa: SLF001
                continue
            storage.set_trial_system_attr(trial._trial_id, DROPPED_ATTR, reason)  # noqa: SLF001
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):  # noqa: SLF001
                dropped.append(trial.number)
    return dropped


def owned_by(owner: str, objective: Callable[[optuna.Trial], Any]) -> Callable[..., Any]:
    """`objective`, stamping each trial with `owner` before anything else runs."""

    def stamped(trial: optuna.Trial) -> Any:
        trial.set_user_attr(OWNER_ATTR, owner)
        return objective(trial)

    return stamped


@contextlib.contextmanager
def process_lock(storage_url: str | None, default_journal: Path) -> Iterator[ProcessLock | None]:
    """This process's lock for a journal storage (None for an RDB one), released at exit."""
    if storage_url is not None and "://" in storage_url:
        yield None
        return
    lock = ProcessLock(lock_folder(Path(storage_url) if storage_url else default_journal))
    try:
        yield lock
    finally:
        lock.release()
