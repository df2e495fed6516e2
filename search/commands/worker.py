"""Workers: processes that join a study and run its trials until it has `n_trials`.

`tabslim search --workers N` starts local ones beside itself (`local_worker`). `tabslim worker`
joins a study from any node (`run_worker`): it rebuilds everything from what the study stores
(config, data reference, split, baseline) and refuses data that differs from the study's.
Workers write nothing to MLflow but their trials' networks; the coordinator mirrors the trials.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

from lightning_modules.errors import TabslimInputError
from search import tracking
from search.cluster import (
    ProcessLock,
    RemoteNetworks,
    Slot,
    gpu_count,
    install_log_redaction,
    is_server,
    owned_by,
    parse_devices,
    pinned,
    plan_slots,
    process_lock,
    recover_dead_trials,
    redact,
)
from search.config import Config, override, validate
from search.inputs import data_fingerprint, load_data, print_notes, set_training_threads
from search.study import (
    DEFAULT_STORAGE,
    TRIAL_ERRORS,
    SearchContext,
    StopAtTarget,
    StudySettings,
    attributes,
    build_context,
    check_same_data,
    find_study,
    make_sampler,
    open_storage,
    quiet,
    run_trial,
    searched_trials,
    study_name,
    trials_root,
)

__all__ = ["WorkerOutcome", "local_worker", "run_owned_trials", "run_worker", "run_workers"]


def local_worker(config_json: str, index: int, parent_run_id: str | None, slot: Slot) -> None:
    """A worker process that `tabslim search --workers N` starts beside itself."""
    quiet()
    install_log_redaction()
    config = Config.model_validate_json(config_json)
    config = pinned(config, slot, config.search.workers)
    set_training_threads(config, config.search.workers)
    ctx = build_context(config)
    if parent_run_id is not None:
        ctx.remote = RemoteNetworks(config.tracking.uri, parent_run_id)
    storage = open_storage(config.search.storage, max_retries=config.search.max_retries)
    # Each worker its own seed, so that they do not propose the same candidates.
    sampler = make_sampler(config.search.sampler, config.search.seed + index)
    study = optuna.load_study(study_name=study_name(config), storage=storage, sampler=sampler)
    with process_lock(config.search.storage, DEFAULT_STORAGE) as lock:
        run_owned_trials(study, config, ctx, lock)


def run_owned_trials(
    study: optuna.Study, config: Config, ctx: SearchContext, lock: ProcessLock | None
) -> str:
    """Run trials until the study has `n_trials` complete, recovering dead trials as it goes.

    Returns the owner name its trials are stamped with.
    """
    locks = lock.folder if lock else None
    owner = lock.owner if lock else f"{os.uname().nodename}-{os.getpid()}"
    recover_dead_trials(study, locks, config.search.max_retries)
    target = config.search.n_trials
    if searched_trials(study) >= target:
        return owner  # nothing left: starting a trial would run one past the target

    def recover(study: optuna.Study, trial: FrozenTrial) -> None:
        recover_dead_trials(study, locks, config.search.max_retries)

    study.optimize(
        owned_by(owner, functools.partial(run_trial, ctx=ctx)),
        n_trials=config.search.n_trials,
        timeout=config.search.timeout,
        catch=TRIAL_ERRORS,
        callbacks=[
            StopAtTarget(config.search.n_trials),
            recover,
        ],
        gc_after_trial=True,
    )
    return owner


@dataclass
class WorkerOutcome:
    study: str
    seed: int
    ran: int
    complete: int
    target: int


# How often a worker that started before the baseline finished looks again.
_BASELINE_POLL_SECONDS = 2.0


def _stored_config(settings: StudySettings, name: str, data_path: str | None) -> Config:
    """The config study `name` stores, checked (raises when it has none, or when `data_path`
    is given for a study made on a bundled dataset)."""
    if settings.config is None:
        raise TabslimInputError(
            f"study '{name}' holds no tabslim config; it was not made by `tabslim search`"
        )
    config = validate(settings.config, f"stored with study '{name}'")
    if data_path is not None and config.data.path is None:
        raise TabslimInputError(
            f"study '{name}' was made on the bundled dataset '{config.data.dataset}'; "
            "--data is for studies made on a file"
        )
    return config


def _find_networks(ctx: SearchContext, config: Config, settings: StudySettings, name: str) -> None:
    """Point `ctx` at the study's networks: the coordinator's MLflow run on a tracking server
    (checked to be there), else the folder the study records."""
    if is_server(config.tracking.uri):
        # No disk in common with the coordinator: networks come from its run, cached here.
        ctx.trials_dir = trials_root(config) / name
        experiment_id = tracking.configure(config.tracking.uri, config.tracking.experiment)
        parent = tracking.find_study_run(MlflowClient(), experiment_id, name)
        if parent is None:
            raise TabslimInputError(
                f"no MLflow run of study '{name}' at {redact(config.tracking.uri)}; "
                "start it with `tabslim search` against that server first"
            )
        ctx.remote = RemoteNetworks(config.tracking.uri, parent)
    elif settings.trials_dir is not None:
        ctx.trials_dir = Path(settings.trials_dir)


def run_worker(
    name: str,
    storage_url: str | None,
    *,
    tracking_uri: str | None = None,
    data_path: str | None = None,
    baseline_timeout: float = 3600.0,
    slot: Slot | None = None,
    processes: int = 1,
) -> WorkerOutcome:
    """Join study `name` and run its trials until it has `n_trials` complete.

    Everything is checked before a trial starts: the study, its stored config, the data (its
    fingerprint against the study's) and, with a tracking server, the study's parent run.
    """
    quiet()
    study = find_study(name, storage_url)
    settings = StudySettings.read(study)
    config = _stored_config(settings, name, data_path)
    changes = {
        "search.storage": storage_url,
        "search.n_trials": attributes.trial_target(study),
        "tracking.uri": tracking_uri,
        "data.path": data_path,
    }
    config = override(config, "from the command line", **changes)
    if slot is not None:
        config = pinned(config, slot, processes)
    data = load_data(config)
    check_same_data(settings, data_fingerprint(data), data.source, name)
    set_training_threads(config, processes)
    ctx = build_context(config, data)
    _find_networks(ctx, config, settings, name)
    print_notes(data)
    _wait_for_baseline(study, baseline_timeout)
    # Workers on many nodes: each draws its own seed, so that they do not propose alike.
    seed = random.SystemRandom().randrange(2**31)
    storage = open_storage(storage_url, max_retries=config.search.max_retries)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(config.search.sampler, seed)
    )
    with process_lock(storage_url, DEFAULT_STORAGE) as lock:
        owner = run_owned_trials(study, config, ctx, lock)
    trials = study.get_trials(deepcopy=False)
    return WorkerOutcome(
        study=name,
        seed=seed,
        ran=sum(attributes.owner(t) == owner for t in trials),
        # As the target counts them: searched trials, not their INT8 copies.
        complete=searched_trials(study),
        target=config.search.n_trials,
    )


def _wait_for_baseline(study: optuna.Study, timeout: float) -> None:
    """Prune trials and paired deltas need the baseline, which the coordinator trains first."""
    deadline = time.monotonic() + timeout
    said = False
    while StudySettings.read(study).baseline_trial is None:
        stopped = attributes.stopped_reason(study)
        if stopped:
            raise TabslimInputError(f"study '{study.study_name}' stopped: {stopped}")
        if time.monotonic() > deadline:
            raise TabslimInputError(
                f"the baseline of study '{study.study_name}' did not finish within "
                f"{timeout:g} s; is `tabslim search` running?"
            )
        if not said:
            print(f"waiting for the baseline of study '{study.study_name}'...", flush=True)
            said = True
        time.sleep(_BASELINE_POLL_SECONDS)


def run_workers(
    name: str,
    storage_url: str | None,
    *,
    devices: str = "auto",
    workers_per_device: int | None = None,
    **options: Any,
) -> list[WorkerOutcome]:
    """`run_worker` in one process per device slot of this node (`--devices`), pinned."""
    slots = plan_slots(parse_devices(devices), 1, workers_per_device, gpu_count())
    if len(slots) == 1:
        return [run_worker(name, storage_url, slot=slots[0], **options)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(slots), mp_context=context) as pool:
        futures = [
            pool.submit(run_worker, name, storage_url, slot=slot, processes=len(slots), **options)
            for slot in slots
        ]
        return [future.result() for future in futures]
