"""Where a trial's time goes, stage by stage, on the default job: a share of its training time.

Runs a real `tabslim search` (configs/default.yaml unless --config) into a temporary MLflow store
and journal, with each stage's function wrapped by a timer:

- draw: drawing the candidate from the trial (`search.study.objective.draw_candidate`);
- build: building the network (`build`, as `search.study.objective` calls it);
- train: `Trainer.fit` time as `fit` reports it (`train_seconds`), or the pruning plan's time;
- export: ONNX export and its check against torch (`export_onnx`, as `search.measure.cost`
  calls it);
- latency: the latency timings (`measure_latency`, as `search.measure.cost` calls it);
- size: parameters, bytes and FLOPs (the rest of `search.study.objective.measure_network`);
- evaluate: everything else inside the trial (final val/test evaluation, Optuna bookkeeping);
- saving: writing the trial's network (`save_network`, as `search.study.objective` calls it);
- mirroring: MLflow, in the main process after each trial (`search.tracking.StudyMirror.sync`).

Goal (issue 13): the median trial's overhead (all but train) is at most 25% of its training.
The wrappers only time; they change nothing the search does. Usage:

    .venv/bin/python bench/trial_overhead.py [--trials 16] [--label after]
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

# The modules whose globals the trial looks the stages up in: patch them there.
import search.measure.cost as measure_module  # noqa: E402
import search.study.objective as objective  # noqa: E402
from search.commands import run_search  # noqa: E402
from search.config import load_config, override  # noqa: E402
from search.tracking import StudyMirror  # noqa: E402

SPENT: dict[str, list[float]] = collections.defaultdict(list)


def _timed(stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[stage].append(time.perf_counter() - started)

    return wrapper


def _instrument() -> None:
    for module, name, stage in [
        (objective, "draw_candidate", "draw"),
        (objective, "build", "build"),
        (objective, "measure_network", "measure"),
        (objective, "save_network", "saving"),
        (measure_module, "export_onnx", "export"),
        (measure_module, "measure_latency", "latency"),
    ]:
        # A stage that moved is a bench that measures nothing: fail rather than skip it.
        setattr(module, name, _timed(stage, getattr(module, name)))
    StudyMirror.sync = _timed("mirroring", StudyMirror.sync)  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    _instrument()
    with tempfile.TemporaryDirectory() as tmp:
        config = override(
            load_config(args.config),
            "bench",
            **{
                "tracking.uri": f"sqlite:///{tmp}/mlruns/mlflow.db",
                "search.storage": f"{tmp}/optuna.journal",
                "search.n_trials": args.trials,
            },
        )
        started = time.perf_counter()
        outcome = run_search(config, progress=False)
        wall = time.perf_counter() - started
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(f"{tmp}/optuna.journal")
        )
        study = optuna.load_study(study_name=outcome.study, storage=storage)
        trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    _print(args.label, trials, wall)


def _print(label: str, trials: list[optuna.trial.FrozenTrial], wall: float) -> None:
    totals = [
        (t.datetime_complete - t.datetime_start).total_seconds()  # type: ignore[operator]
        for t in trials
    ]
    train = [float(t.user_attrs.get("metrics", {}).get("train_seconds", 0.0)) for t in trials]
    n = len(trials)
    # Stage lists hold one entry per call; repeats of earlier candidates call nothing.
    measured = SPENT.get("measure", [])
    inner = {s: sum(SPENT.get(s, [])) for s in ("export", "latency")}
    per_trial = {
        "draw": sum(SPENT.get("draw", [])) / n,
        "build": sum(SPENT.get("build", [])) / n,
        "train": sum(train) / n,
        "export": inner["export"] / n,
        "latency": inner["latency"] / n,
        "size": (sum(measured) - inner["export"] - inner["latency"]) / n,
        "saving": sum(SPENT.get("saving", [])) / n,
        "mirroring": sum(SPENT.get("mirroring", [])) / n,
    }
    inside = sum(totals) / n
    accounted = sum(v for k, v in per_trial.items() if k != "mirroring")
    per_trial["evaluate"] = max(0.0, inside - accounted)
    print(f"## trial overhead {label}".rstrip())
    print(f"{n} complete trials, {wall:.1f} s wall for the whole search")
    print("| stage | mean s per trial | share of training |")
    print("|---|---|---|")
    for stage, seconds in per_trial.items():
        print(f"| {stage} | {seconds:.3f} | {seconds / per_trial['train']:.1%} |")
    overhead = [(total - t) / t for total, t in zip(totals, train, strict=True) if t > 0]
    mirror = per_trial["mirroring"] / per_trial["train"]
    print(
        f"median per-trial overhead inside the trial: {statistics.median(overhead):.1%} of "
        f"its training; with mirroring added: {statistics.median(overhead) + mirror:.1%} "
        "(goal: at most 25%)"
    )


if __name__ == "__main__":
    main()
