"""Search quality in one run: the regret of the default search's champion, beside a sweep.

For each table the default job (configs/default.yaml: MLP 256-256-128, both approaches, the
scale x shape space with its uniform ladder) runs as `tabslim search` would: baseline first,
then the ladder and its refinement where it crossed the floor, then the sampler's own trials,
then the confirmation step (`search.confirm: auto`) and the champion
(`search.champion.champion`), on in-memory studies that differ only in sampler and seed. The
data split and training seed stay fixed, so a candidate trains identically whoever proposes
it; results are cached by candidate key within a table, and the output says how many trials
were trained and how many reused.

Per study (table x seed x sampler):
- the champion, its size ratio and its test delta with the paired 95% interval;
- the oracle: the smallest trial of the same study whose test delta is within the floor. It
  sees the test rows, which the search never does, so it is lucky by construction;
- the regret: the champion's size over the oracle's (1 is the oracle itself, 2 is about one
  width step above it);
- the wall time of the search and of its confirmation, and the trainings confirmation spent.

Goals, over real tables of at least 5,000 rows x three seeds: median regret <= 2 and none
above 4; the champion within the floor on test in >= 90% of studies; never the baseline when
a trial of at most half its size held the floor on test with its whole test interval.

Beside them, per table, a uniform sweep: the baseline plus trials-1 shapes that multiply
every layer alike (geometric from 0.9 down to the space's scale low), trained from scratch and
confirmed the same way; its champion, its regret against its own study's oracle, and its wall
time. The search's champion should be at most the sweep's. The comparison is at equal trials
(the sweep trains as many as each search), not at equal wall time: both wall times are printed
side by side instead.

Run: `.venv/bin/python bench/search_quality.py --datasets hi.csv:whi,health.csv:insurance
--seeds 0,1,2 --trials 20`. A table is a bundled dataset (default: digits,breast_cancer) or
`FILE.csv:TARGET`. Other options: `--samplers tpe` (the default search; `random` and
`random-search`, the random sampler without the ladder, when named), `--max-epochs N`,
`--confirm-folds K` (every study, the sweep's too, confirmed by K folds instead of
`search.confirm: auto`), `--json PATH` (one JSON object per study appended to PATH, NaN as
null). It prints markdown tables; it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from search.config import Config, load_config, override
from search.front import champion, confirm_search, pareto, quantize_front
from search.inputs import set_training_threads
from search.study import (
    SearchContext,
    StudyKey,  # noqa: E402
    StudySettings,
    baseline_params,
    build_context,
    directions,
    draw_candidate,
    ladder_params,
    make_sampler,
    refine_after_ladder,
    run_trial,
    study_settings,
    uniform_params,
)

# Plain random search: the random sampler from the first trial after the baseline, without the
# ladder and its refinement, which are part of the default search's strategy.
RANDOM_SEARCH = "random-search"
_COPIED = (
    "approach", "hidden", "plan", "candidate_key", "spec", "metrics", "prune_details",
    "stopped_by", "network_digests",
)  # fmt: skip
_ERRORS = (RuntimeError, FloatingPointError)


@dataclass
class CachedObjective:
    """`run_trial`, but a candidate trained before on this dataset is reused."""

    ctx: SearchContext
    cache: dict[str, tuple[tuple[float, float, float], dict[str, Any]]] = field(
        default_factory=dict
    )
    trained: int = 0
    reused: int = 0

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        # Optuna returns a parameter's value again when it is suggested twice, so drawing here
        # and again inside run_trial gives the same candidate.
        key = draw_candidate(trial, self.ctx).key
        # Trial numbers restart in every study, so a trained network is kept under its key and
        # put back in its new trial's folder (INT8 copies and confirmation read it there).
        kept = self.ctx.trials_dir / "cache" / hashlib.sha1(key.encode()).hexdigest()
        folder = self.ctx.trials_dir / f"trial-{trial.number}"
        if key in self.cache:
            self.reused += 1
            values, attrs = self.cache[key]
            for name, value in attrs.items():
                trial.set_user_attr(name, value)
            settings = StudySettings.read(trial.study)
            trial.set_constraint("metric_floor", settings.violation(values[0]))
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(kept, folder)
            return values
        self.trained += 1
        values = run_trial(trial, self.ctx)
        stored = trial.study._storage.get_trial(trial._trial_id).user_attrs  # noqa: SLF001
        self.cache[key] = (values, {k: stored[k] for k in _COPIED if k in stored})
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(folder, kept)
        return values


@dataclass
class StudyResult:
    dataset: str
    seed: int
    sampler: str
    champion: FrozenTrial | None
    note: str
    oracle: FrozenTrial | None
    baseline_size: float
    drop: float
    higher: bool
    seconds: float
    confirm_seconds: float
    confirmed: str
    cost: dict[str, Any]
    # The champion is the baseline though a trial of at most half its size held on test.
    baseline_despite_half: bool = False
    # Trials this study trained, and those it reused from earlier studies of the same table.
    trained: int = 0
    reused: int = 0

    @property
    def regret(self) -> float:
        if self.champion is None or self.oracle is None:
            return float("nan")
        return self.champion.values[1] / self.oracle.values[1]

    @property
    def within(self) -> bool:
        return _within(_metric(self.champion, "test_delta"), self.drop, self.higher)


def _config(dataset: str, root: Path, max_epochs: int | None) -> Config:
    """The default job on a bundled dataset, or on `FILE.csv:TARGET` (a table of your own)."""
    source: dict[str, Any] = {"data.dataset": dataset}
    if ":" in dataset:
        path, target = dataset.rsplit(":", 1)
        source = {"data.path": path, "data.target": target}
    changes: dict[str, Any] = {
        **source,
        "tracking.uri": f"sqlite:///{root}/mlflow.db",
        "training.max_epochs": max_epochs,
    }
    return override(load_config(None), "bench", **changes)


def _study(ctx: SearchContext, settings: StudySettings, sampler: str, seed: int) -> optuna.Study:
    study = optuna.create_study(
        directions=directions(settings.higher_is_better), sampler=make_sampler(sampler, seed)
    )
    settings.write(study)
    return study


def _run(
    objective: CachedObjective, settings: StudySettings, sampler: str, seed: int, trials: int
) -> optuna.Study:
    """One search as `tabslim search` runs it: baseline, the ladder, then the sampler's trials."""
    ctx = objective.ctx
    with_ladder = sampler != RANDOM_SEARCH
    study = _study(ctx, settings, sampler if with_ladder else "random", seed)
    n_layers = len(ctx.baseline.hidden)
    search = ctx.config.search
    study.enqueue_trial(baseline_params(search.space, n_layers), user_attrs={"baseline": True})
    study.optimize(objective, n_trials=1)
    if with_ladder:
        for params in ladder_params(search.space, n_layers, search.approaches)[: trials - 1]:
            study.enqueue_trial(params)
    while len(study.get_trials(states=(TrialState.COMPLETE,))) < trials:
        study.optimize(objective, n_trials=1, catch=_ERRORS)
        if with_ladder:
            refine_after_ladder(study, ctx)
    if ctx.config.search.quantize:
        quantize_front(study, ctx)  # as `tabslim search` does before confirmation
    return study


def _sweep(objective: CachedObjective, settings: StudySettings, trials: int) -> optuna.Study:
    """The baseline and trials-1 uniform shapes, from 0.9x down to the space's scale low."""
    ctx = objective.ctx
    study = _study(ctx, settings, "random", 0)
    space, n_layers = ctx.config.search.space, len(ctx.baseline.hidden)
    study.enqueue_trial(baseline_params(space, n_layers), user_attrs={"baseline": True})
    for multiplier in np.geomspace(0.9, space.scale.low, trials - 1):
        params = uniform_params(space, n_layers, float(multiplier))
        if len(ctx.config.search.approaches) > 1:
            params["approach"] = "scratch"
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=trials, catch=_ERRORS)
    if ctx.config.search.quantize:
        quantize_front(study, ctx)
    return study


def _confirm(study: optuna.Study, ctx: SearchContext) -> str:
    """The confirmation step after the search, as `tabslim search` runs it; what it did."""
    confirm_search(study, ctx)
    plan = study.user_attrs[StudyKey.CONFIRM_PLAN]
    return f"{plan['k']} {plan['by']}" if plan["k"] else "none"


def _metric(trial: FrozenTrial | None, name: str) -> float:
    if trial is None:
        return float("nan")
    return float((trial.user_attrs.get("metrics") or {}).get(name, float("nan")))


def _oracle(study: optuna.Study, drop: float, higher: bool) -> FrozenTrial | None:
    """The smallest trial whose test delta is within the floor (ties: faster); it sees the test
    rows, which the search never does. The baseline (delta 0) always qualifies."""
    within = [
        t
        for t in pareto.complete_trials(study)
        if "repeat_of" not in t.user_attrs and _within(_metric(t, "test_delta"), drop, higher)
    ]
    return min(within, key=lambda t: (t.values[1], t.values[2], t.number), default=None)


def _within(delta: float, drop: float, higher: bool) -> bool:
    return delta == delta and (delta >= -drop if higher else delta <= drop)


def _held_at_half(study: optuna.Study, result: StudyResult) -> bool:
    """Whether a trial of at most half the baseline's size (copies of earlier trials aside) held
    the floor on test with its whole test interval: then the baseline must not be champion."""
    for t in pareto.complete_trials(study):
        if "repeat_of" in t.user_attrs or t.values[1] > 0.5 * result.baseline_size:
            continue
        low, high = _metric(t, "test_delta_ci_low"), _metric(t, "test_delta_ci_high")
        if (low > -result.drop) if result.higher else (high < result.drop):
            return True
    return False


def _measure(
    study: optuna.Study, ctx: SearchContext, dataset: str, seed: int, sampler: str, started: float
) -> StudyResult:
    """Confirm `study` as the product does and read off its champion, oracle and regret."""
    searched = time.perf_counter()
    confirmed = _confirm(study, ctx)
    done = time.perf_counter()
    # allowed_drop, not max_metric_drop: for rmse the latter is a share of the baseline's RMSE.
    settings = StudySettings.read(study)
    drop, higher = settings.allowed_drop(), settings.higher_is_better
    picked = champion(study)
    base = pareto.baseline_trial(study, pareto.complete_trials(study))
    result = StudyResult(
        dataset=dataset, seed=seed, sampler=sampler, champion=picked.trial, note=picked.note,
        oracle=_oracle(study, drop, higher), baseline_size=base.values[1] if base else math.nan,
        drop=drop, higher=higher, seconds=done - started, confirm_seconds=done - searched,
        confirmed=confirmed, cost=study.user_attrs.get(StudyKey.CONFIRM_COST) or {},
    )  # fmt: skip
    result.baseline_despite_half = _is_base(result) and _held_at_half(study, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default="digits,breast_cancer")
    parser.add_argument("--samplers", default="tpe")
    parser.add_argument("--max-epochs", type=int, default=None)
    # Confirm every study, and the sweep, by this many folds instead of `search.confirm: auto`.
    parser.add_argument("--confirm-folds", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="append one JSON object per study to PATH")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    started = time.perf_counter()
    results: list[StudyResult] = []
    sweeps: list[StudyResult] = []
    print("Studies as they end (the sweep columns are filled in the table at the end):\n")
    _print_header()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            config = _config(dataset, Path(tmp), args.max_epochs)
            if args.confirm_folds:
                folds = {"search.confirm": args.confirm_folds, "search.confirm_by": "folds"}
                config = override(config, "bench", **folds)
            set_training_threads(config)
            ctx = build_context(config)
            ctx.trials_dir = Path(tmp) / Path(dataset.split(":")[0]).stem
            objective = CachedObjective(ctx)
            settings = study_settings(ctx)
            first: StudySettings | None = None
            own: list[StudyResult] = []
            for seed in seeds:
                for sampler in samplers:
                    began, counts = time.perf_counter(), (objective.trained, objective.reused)
                    study = _run(objective, first or settings, sampler, seed, args.trials)
                    first = first or StudySettings.read(study)
                    result = _measured(study, ctx, objective, counts, dataset, seed, sampler, began)
                    own.append(result)
                    _print_row(result, None)
            assert first is not None
            began, counts = time.perf_counter(), (objective.trained, objective.reused)
            study = _sweep(objective, first, args.trials)
            sweep = _measured(study, ctx, objective, counts, dataset, 0, "sweep", began)
            _print_row(sweep, None)
            print(
                f"{dataset}: {objective.trained} networks trained, {objective.reused} reused\n",
                flush=True,
            )
            results += own
            sweeps.append(sweep)
            if args.json:
                with open(args.json, "a") as out:
                    for r in [*own, sweep]:
                        out.write(json.dumps(_record(r, None if r is sweep else sweep)) + "\n")
    _report(results, sweeps, time.perf_counter() - started, args.trials)
    return 0


def _measured(
    study: optuna.Study,
    ctx: SearchContext,
    objective: CachedObjective,
    counts: tuple[int, int],
    dataset: str,
    seed: int,
    sampler: str,
    began: float,
) -> StudyResult:
    """`_measure`, plus the trials this study trained and reused from the table's cache."""
    trained, reused = objective.trained - counts[0], objective.reused - counts[1]
    result = _measure(study, ctx, dataset, seed, sampler, began)
    result.trained, result.reused = trained, reused
    return result


def _record(r: StudyResult, sweep: StudyResult | None) -> dict[str, Any]:
    """A study's row as JSON-ready values: numbers as floats, NaN as null."""
    cost = r.cost or {}
    record: dict[str, Any] = {
        "dataset": r.dataset, "seed": r.seed, "sampler": r.sampler, "confirmation": r.confirmed,
        "champion": _name(r.champion), "champion_size_ratio": _size(r.champion, r),
        "champion_test_delta": _metric(r.champion, "test_delta"),
        "champion_test_delta_ci_low": _metric(r.champion, "test_delta_ci_low"),
        "champion_test_delta_ci_high": _metric(r.champion, "test_delta_ci_high"),
        "within_floor_on_test": r.within, "allowed_drop": r.drop, "higher_is_better": r.higher,
        "oracle": _name(r.oracle), "oracle_size_ratio": _size(r.oracle, r),
        "oracle_test_delta": _metric(r.oracle, "test_delta"), "regret": r.regret,
        "baseline_despite_half_size": r.baseline_despite_half, "seconds": r.seconds,
        "confirm_seconds": r.confirm_seconds, "trials_trained": r.trained,
        "trials_reused": r.reused, "confirm_candidates": cost.get("candidates"),
        "confirm_of": cost.get("of"), "confirm_trainings": cost.get("trainings"),
        "confirm_cost_seconds": cost.get("seconds"), "note": r.note,
        "sweep_champion": _name(sweep.champion) if sweep else None,
        "sweep_size_ratio": _size(sweep.champion, sweep) if sweep else None,
        "sweep_test_delta": _metric(sweep.champion, "test_delta") if sweep else None,
        "sweep_regret": sweep.regret if sweep else None,
        "sweep_seconds": sweep.seconds if sweep else None,
        "sweep_confirm_seconds": sweep.confirm_seconds if sweep else None,
        "champion_le_sweep": _not_larger(r, sweep),
    }  # fmt: skip
    return {k: _plain(v) if k != "seed" else v for k, v in record.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value) if math.isfinite(value) else None


_HEADER = (
    "| table | seed | sampler | confirmation | champion | size ratio | test delta [95% CI] | "
    "within floor on test | oracle, size ratio (test delta) | regret | sweep's champion, size "
    "ratio (test delta) (regret in its own study) | champion <= sweep's | wall s "
    "(confirmation s) | sweep's wall s (confirmation s) | trials trained / reused | "
    "confirmation cost: judged / candidates, trainings, s |"
)


def _print_header() -> None:
    print(_HEADER)
    print("|" + "---|" * (_HEADER.count("|") - 1), flush=True)


def _print_row(r: StudyResult, sweep: StudyResult | None) -> None:
    rival = smaller = sweep_wall = "-"
    if sweep is not None:
        rival = (
            f"{_name(sweep.champion)}, {_sized(sweep.champion, sweep)} "
            f"({_fmt(sweep.regret, '.2f')})"
        )
        sweep_wall = f"{sweep.seconds:.0f} ({sweep.confirm_seconds:.0f})"
        le = _not_larger(r, sweep)
        smaller = "-" if le is None else ("yes" if le else "no")
    flag = " (though a half-size trial held on test)" if r.baseline_despite_half else ""
    print(
        f"| {r.dataset} | {r.seed} | {r.sampler} | {r.confirmed} | {_name(r.champion)}{flag} | "
        f"{_fmt(_size(r.champion, r))} | {_interval(r.champion, 'test')} | "
        f"{'yes' if r.within else 'no'} | {_name(r.oracle)}, {_sized(r.oracle, r)} | "
        f"{_fmt(r.regret, '.2f')} | {rival} | {smaller} | {r.seconds:.0f} "
        f"({r.confirm_seconds:.0f}) | {sweep_wall} | {r.trained} / {r.reused} | "
        f"{_spent(r.cost)} |",
        flush=True,
    )


def _spent(cost: dict[str, Any]) -> str:
    """ "3 / 12, 15, 40": candidates judged of those in order, trainings, seconds; "-" if none."""
    if not cost:
        return "-"
    judged = f"{cost.get('candidates', '?')}" + (f" / {cost['of']}" if "of" in cost else "")
    seconds = cost.get("seconds")
    spent = f"{judged}, {cost.get('trainings', '?')}"
    spent += f", {seconds:.0f}" if isinstance(seconds, (int, float)) else ", ?"
    early = cost.get("rejected_early")
    return spent + (f" ({early} rejected early)" if early else "")


def _is_base(r: StudyResult) -> bool:
    return r.champion is not None and bool(r.champion.user_attrs.get("baseline"))


def _not_larger(r: StudyResult, sweep: StudyResult | None) -> bool | None:
    """Whether the champion is at most the sweep's champion in size; None if either is absent."""
    if sweep is None or r.champion is None or sweep.champion is None:
        return None
    return bool(r.champion.values[1] <= sweep.champion.values[1])


def _report(
    results: list[StudyResult], sweeps: list[StudyResult], seconds: float, trials: int
) -> None:
    print(
        f"\n{trials} trials per study, {seconds:.0f} s in all. The sweep trains as many trials as "
        "each search: the comparison is at equal trials, not at equal wall time, and both wall "
        "times are shown side by side. A study's wall time leaves out the trials it reused from "
        "earlier studies of the same table (trials trained / reused).\n"
    )
    _print_header()
    sweep_by = {s.dataset: s for s in sweeps}
    for r in results:
        _print_row(r, sweep_by.get(r.dataset))
    for s in sweeps:
        _print_row(s, None)
    regrets = [r.regret for r in results if r.regret == r.regret]
    n = len(results)
    bad_baseline = sum(r.baseline_despite_half for r in results)
    not_larger = sum(bool(_not_larger(r, sweep_by.get(r.dataset))) for r in results)
    median = _fmt(statistics.median(regrets), ".2f") if regrets else "-"
    largest = _fmt(max(regrets), ".2f") if regrets else "-"
    print(
        f"\nregret: median {median} (goal <= 2), max {largest}, above 4 in "
        f"{sum(x > 4 for x in regrets)} of {len(regrets)} (goal 0); champion within the floor on "
        f"test in {sum(r.within for r in results)} of {n} (goal >= 90%); the baseline though a "
        f"trial of at most half its size held on test with its whole interval: {bad_baseline} "
        f"(goal 0); champion <= the sweep's: {not_larger} of {n}"
    )
    print("\nchampion notes:")
    for r in [*results, *sweeps]:
        print(f"- {r.dataset} {r.seed} {r.sampler}: {r.note}")


def _sized(trial: FrozenTrial | None, result: StudyResult) -> str:
    """ "0.005 (-0.0018)": a trial's size ratio and test delta."""
    return f"{_fmt(_size(trial, result))} ({_fmt(_metric(trial, 'test_delta'), '+.4f')})"


def _name(trial: FrozenTrial | None) -> str:
    if trial is None:
        return "-"
    return "baseline" if trial.user_attrs.get("baseline") else str(trial.number)


def _size(trial: FrozenTrial | None, result: StudyResult) -> float:
    return trial.values[1] / result.baseline_size if trial else float("nan")


def _interval(trial: FrozenTrial | None, split: str) -> str:
    delta = _metric(trial, f"{split}_delta")
    low, high = _metric(trial, f"{split}_delta_ci_low"), _metric(trial, f"{split}_delta_ci_high")
    if delta != delta:
        return "-"
    return f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]"


def _fmt(value: float, spec: str = ".3f") -> str:
    return "-" if value != value else f"{value:{spec}}"


if __name__ == "__main__":
    sys.exit(main())
