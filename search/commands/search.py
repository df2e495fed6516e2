"""`tabslim search`: the multi-objective width search, from config to registered champion.

The main process checks the input, trains the baseline first (so every later trial and every
report is relative to it), then runs trials beside any extra worker processes on the same
study, mirroring finished trials to MLflow as they land.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from tqdm import tqdm

from lightning_modules.errors import TabslimInputError
from search import tracking
from search.cluster import (
    ProcessLock,
    RemoteNetworks,
    Slot,
    drop_waiting_trials,
    is_server,
    owned_by,
    pinned,
    process_lock,
    recover_dead_trials,
    slots_for,
    wait_for_running,
    without_passwords,
)
from search.commands.continued import kept_settings, prune_note
from search.commands.output import TERMINAL_COLUMNS, fit
from search.commands.worker import local_worker
from search.config import Config
from search.front import (
    confirm_search,
    decide_champion,
    paired_comparison,
    pareto,
    study_text,
)
from search.inputs import data_params, print_notes, set_training_threads
from search.study import (
    DEFAULT_STORAGE,
    TRIAL_ERRORS,
    SearchContext,
    StopAtTarget,
    StudySettings,
    attributes,
    baseline_params,
    build_context,
    check_baseline_learned,
    ladder_params,
    open_storage,
    open_study,
    quiet,
    refine_after_ladder,
    run_trial,
    searched_trials,
    state_power,
    storage_label,
    study_name,
    study_settings,
)
from search.tracking import StudyMirror, record_served_latency


@dataclass
class SearchOutcome:
    study: str
    storage: str
    trials: int
    front_size: int
    champion_uri: str | None
    champion_note: str
    report: str
    parent_run_id: str
    experiment_id: str
    # The report for a terminal: the table without the columns that do not fit.
    terminal_report: str = ""
    # Finished trials in the report's table: the searched ones and their INT8 copies.
    finished: int = 0
    # What this run should say besides the report (`search.commands.continued`).
    notes: list[str] = field(default_factory=list)


def run_search(config: Config, *, progress: bool = True, force: bool = False) -> SearchOutcome:
    """Run (or continue) the study the config describes. Input is checked before anything runs.

    `force`: move `<study>@champion` to this search's champion even off a version that
    `tabslim retrain` promoted.
    """
    quiet()
    slots = slots_for(config)
    config = pinned(config, slots[0], len(slots))
    ctx = build_context(config)
    set_training_threads(config, config.search.workers)
    name = study_name(config)
    # The tracking store is checked before the storage is opened, so that bad input leaves no
    # study (and no journal file) behind.
    experiment_id = tracking.configure(config.tracking.uri, config.tracking.experiment)
    storage = open_storage(config.search.storage, max_retries=config.search.max_retries)
    study = open_study(name, storage, storage_label(config), config, study_settings(ctx))
    ctx.config, kept = kept_settings(study, ctx.config)
    if kept:
        print(f"tabslim: note: {kept}", file=sys.stderr)
    with process_lock(config.search.storage, DEFAULT_STORAGE) as lock:
        return _coordinate(study, ctx, lock, progress, slots, experiment_id, force)


def _coordinate(
    study: optuna.Study,
    ctx: SearchContext,
    lock: ProcessLock | None,
    progress: bool,
    slots: list[Slot],
    experiment_id: str,
    force: bool = False,
) -> SearchOutcome:
    """The coordinator: baseline, its own trials, local workers, MLflow, the champion."""
    config = ctx.config
    locks = lock.folder if lock else None
    owner = lock.owner if lock else f"{os.uname().nodename}-{os.getpid()}"
    _prepare(study, ctx, locks)
    mirror = _start_mirror(study, ctx, experiment_id, force)
    target = config.search.n_trials
    bar = _progress_bar(study, target, progress)

    def after_trial(study: optuna.Study, trial: FrozenTrial | None) -> None:
        recover_dead_trials(study, locks, config.search.max_retries)
        refine_after_ladder(study, ctx)
        front_size = mirror.sync()
        bar.n = min(searched_trials(study), target)
        bar.set_postfix(front=front_size, refresh=False)
        bar.refresh()

    objective = owned_by(owner, functools.partial(run_trial, ctx=ctx))
    status = "FINISHED"
    try:
        if StudySettings.read(study).baseline_trial is None:
            _run_baseline(study, ctx, objective, after_trial)
        check_baseline_learned(study, ctx)
        _candidates(study, ctx, objective, after_trial, mirror, locks, slots)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        # Bad input, a bug, a lost storage: the parent run says FAILED, never FINISHED.
        status = "FAILED"
        raise
    finally:
        bar.close()
        tables = {}
        if config.search.paired and status == "FINISHED":
            tables["paired_comparison.csv"] = paired_comparison(study, ctx)
        if status == "FINISHED":
            confirmation = confirm_search(study, ctx, progress)
            if confirmation is not None:
                tables["certification.csv"] = confirmation
        # Only a finished search has a champion: a failed baseline leaves nothing to recommend,
        # and an interrupted study's front is not the one its config asked for. It is decided
        # once, here; the mirror registers it and the report reads it.
        picked = decide_champion(study) if status == "FINISHED" else None
        if picked is None and attributes.champion_choice(study) is not None:
            attributes.write_champion_choice(study, None)  # an earlier run's, no longer this one's
        champion = mirror.finish(status=status, tables=tables, champion=picked)
    if status == "FINISHED":
        _after_finish(ctx, mirror, champion)
    return _outcome(study, ctx, mirror, champion, experiment_id)


def _after_finish(ctx: SearchContext, mirror: StudyMirror, champion: str | None) -> None:
    """The champion timed as served beside the baseline; or, where a budget left no
    champion, the one line that says so."""
    config = ctx.config
    if champion is None:
        if config.search.champion.needs_budget:
            # The study, its runs and its front stand; only the question asked has no answer.
            raise TabslimInputError(
                f"{mirror.champion_note}; raise search.budget, or search again with smaller shapes"
            )
        return
    if config.measure.served != "off":
        record_served_latency(
            mirror,
            champion,
            ctx.served_rows().rows,
            tracking_uri=config.tracking.uri,
            batch_sizes=config.measure.batch_sizes,
            http=config.measure.served == "http",
        )


def _prepare(study: optuna.Study, ctx: SearchContext, locks: Path | None) -> None:
    """What comes before the mirror and the trials: recovery, the target, the data's notes."""
    config = ctx.config
    # Trials a killed run left RUNNING are failed and queued again before anything else.
    recover_dead_trials(study, locks, config.search.max_retries)
    # Workers run until the study has what its latest `tabslim search` asked for.
    attributes.write_trial_target(study, config.search.n_trials)
    print_notes(ctx.data)
    ctx.trials_dir.mkdir(parents=True, exist_ok=True)


def _start_mirror(
    study: optuna.Study, ctx: SearchContext, experiment_id: str, force: bool
) -> StudyMirror:
    """The study's MLflow mirror, its parent run started; on a tracking server, also where
    trials' networks travel."""
    config, name = ctx.config, study.study_name
    params = tracking.flatten("", without_passwords(config.model_dump(exclude={"tracking"})))
    params |= data_params(ctx.data)
    params |= {"study": name, "storage": storage_label(config)}
    mirror = StudyMirror(
        study=study,
        experiment_id=experiment_id,
        trials_dir=ctx.trials_dir,
        input_example=ctx.data.example_rows(),
        keep_models=config.search.keep_models,
        params=params,
        dataset=tracking.training_dataset(ctx.data, config.data),
        data=ctx.data,
        reference_rows=config.tracking.reference_rows,
        force=force,
    )
    mirror.start()
    if is_server(config.tracking.uri):
        # Nodes share no disk: trials' networks travel as artifacts of the parent run.
        ctx.remote = mirror.remote = RemoteNetworks(config.tracking.uri, mirror.parent_run_id)
    return mirror


def _progress_bar(study: optuna.Study, target: int, progress: bool) -> tqdm:
    """Searched trials out of `target`, for a terminal (disabled without `progress`)."""
    return tqdm(
        total=target,
        initial=min(searched_trials(study), target),
        desc=study.study_name,
        unit="trial",
        disable=not progress,
        dynamic_ncols=True,
    )


def _candidates(
    study: optuna.Study,
    ctx: SearchContext,
    objective: Any,
    after_trial: Any,
    mirror: StudyMirror,
    locks: Path | None,
    slots: list[Slot],
) -> None:
    """Once the baseline learned: the power statement, then the candidates up to the target,
    then (if asked) their INT8 copies."""
    config, target = ctx.config, ctx.config.search.n_trials
    # Before the candidates train: whether the certification rows can certify the floor.
    statement = state_power(study, ctx)
    if statement is not None:
        print(fit(f"tabslim: {statement.text()}"), flush=True)
    remaining = target - searched_trials(study)
    if remaining > 0:
        parent = mirror.parent_run_id if ctx.remote else None
        _optimize(study, config, objective, after_trial, remaining, parent, locks, slots)
    if config.search.quantize:
        # Imported here: ONNX Runtime's quantizer is only needed once the front stands.
        from search.front import quantize_front

        quantize_front(study, ctx)


def _outcome(
    study: optuna.Study,
    ctx: SearchContext,
    mirror: StudyMirror,
    champion: str | None,
    experiment_id: str,
) -> SearchOutcome:
    """What the search did, as the command prints it."""
    config, name = ctx.config, study.study_name
    table = pareto.trial_table(study)
    return SearchOutcome(
        study=name,
        storage=storage_label(config),
        trials=searched_trials(study),
        front_size=int(table["pareto"].sum()) if len(table) else 0,
        champion_uri=champion,
        champion_note=mirror.champion_note,
        report=study_text(study),
        terminal_report=study_text(study, width=TERMINAL_COLUMNS),
        parent_run_id=mirror.parent_run_id,
        experiment_id=experiment_id,
        finished=len(table),
        notes=[n for n in [prune_note(study, config, len(ctx.baseline.group_sizes()))] if n],
    )


def _run_baseline(study: optuna.Study, ctx: SearchContext, objective: Any, callback: Any) -> None:
    """Train the baseline as the study's first trial; everything is measured against it."""
    n_layers = len(ctx.baseline.group_sizes())
    study.enqueue_trial(
        baseline_params(ctx.config.search.space, n_layers),
        user_attrs=attributes.baseline_attrs(),
        skip_if_exists=True,
    )
    # A baseline that diverges is caught here and reported by `check_baseline_learned`.
    study.optimize(objective, n_trials=1, callbacks=[callback], catch=TRIAL_ERRORS)
    search = ctx.config.search
    room = max(0, search.n_trials - searched_trials(study))
    for params in ladder_params(search.space, n_layers, search.approaches)[:room]:
        study.enqueue_trial(params, skip_if_exists=True)


def _optimize(
    study: optuna.Study,
    config: Config,
    objective: Any,
    callback: Any,
    remaining: int,
    parent_run_id: str | None,
    locks: Path | None,
    slots: list[Slot],
) -> None:
    search = config.search
    processes = []
    if len(slots) > 1:
        context = multiprocessing.get_context("spawn")
        for index, slot in enumerate(slots[1:], start=1):
            process = context.Process(
                target=local_worker,
                args=(config.model_dump_json(), index, parent_run_id, slot),
                daemon=False,
            )
            process.start()
            processes.append(process)
    try:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=search.timeout,
            catch=TRIAL_ERRORS,
            callbacks=[StopAtTarget(search.n_trials), callback],
            gc_after_trial=True,
        )
        # Trials other nodes' workers still run land after this one's last: wait for them, so
        # that the front, MLflow and the champion see every trial.
        wait_for_running(study, locks, search.max_retries)
        _drop_leftover_retries(study, search.n_trials)
    finally:
        for process in processes:
            process.join()
        callback(study, None)


def _drop_leftover_retries(study: optuna.Study, target: int) -> None:
    """A study that ends with its trials has nothing waiting: a retry queued for a trial that
    died late would be run by no process now, and by the next search one trial past its
    target. It is dropped, and said so."""
    if searched_trials(study) < target:
        return  # a timeout ended it: the next search runs what is queued
    dropped = drop_waiting_trials(study, f"queued after the study had its {target} trials")
    if dropped:
        print(
            f"tabslim: note: dropped {len(dropped)} queued trial(s) "
            f"({', '.join(map(str, dropped))}) that no process would run: the study already "
            f"has its {target} trials",
            file=sys.stderr,
        )
