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

Beside them, a uniform sweep at the same number of trainings: the baseline plus trials-1
shapes that multiply every layer alike (geometric from 0.9 down to the space's scale low),
trained from scratch and confirmed the same way; its champion, its own regret and its wall
time. The search's champion should be at most the sweep's.

Run: `.venv/bin/python bench/search_quality.py [--trials 20] [--seeds 0,1,2]
[--datasets digits,breast_cancer,hi.csv:whi] [--samplers tpe] [--max-epochs N]
[--confirm-folds K] [--json results.jsonl]`. With `--confirm-folds K`, every study (the
sweep's too) is confirmed by K folds instead of the default. It prints markdown tables; it
asserts nothing.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from search import pareto  # noqa: E402
from search.adapters import set_training_threads  # noqa: E402
from search.champion import COST_ATTR, champion  # noqa: E402
from search.config import Config, load_config, override  # noqa: E402
from search.confirm import confirm_search  # noqa: E402
from search.context import build_context, study_settings  # noqa: E402
from search.objective import SearchContext, draw_candidate, run_trial  # noqa: E402
from search.quantized import quantize_front  # noqa: E402
from search.samplers import make_sampler  # noqa: E402
from search.search_job import refine_after_ladder  # noqa: E402
from search.space import baseline_params, ladder_params, uniform_params  # noqa: E402
from search.study import directions  # noqa: E402
from search.study_settings import StudySettings  # noqa: E402

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
    plan = study.user_attrs[pareto.CONFIRM_PLAN_ATTR]
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
    """Whether a trial of at most half the baseline's size held the floor on test with its
    whole test interval: then the baseline must not be champion."""
    for t in pareto.complete_trials(study):
        if t.values[1] > 0.5 * result.baseline_size:
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
    settings = StudySettings.read(study)
    drop, higher = settings.allowed_drop(), settings.higher_is_better
    picked = champion(study)
    base = pareto.baseline_trial(study, pareto.complete_trials(study))
    return StudyResult(
        dataset=dataset, seed=seed, sampler=sampler, champion=picked.trial, note=picked.note,
        oracle=_oracle(study, drop, higher), baseline_size=base.values[1] if base else math.nan,
        drop=drop, higher=higher, seconds=done - started, confirm_seconds=done - searched,
        confirmed=confirmed, cost=study.user_attrs.get(COST_ATTR) or {},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default="digits,breast_cancer")
    parser.add_argument("--samplers", default="tpe")
    parser.add_argument("--max-epochs", type=int, default=None)
    # Confirm every study, and the sweep, by this many folds instead of `search.confirm: auto`.
    parser.add_argument("--confirm-folds", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write one JSON line per study here")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    started = time.perf_counter()
    results: list[StudyResult] = []
    sweeps: list[StudyResult] = []
    held: dict[tuple[str, int, str], bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            config = _config(dataset, Path(tmp), args.max_epochs)
            if args.confirm_folds:
                config = override(config, "bench", **{"search.confirm": args.confirm_folds,
                                                      "search.confirm_by": "folds"})  # fmt: skip
            set_training_threads(config)
            ctx = build_context(config)
            ctx.trials_dir = Path(tmp) / Path(dataset.split(":")[0]).stem
            objective = CachedObjective(ctx)
            settings = study_settings(ctx)
            first: StudySettings | None = None
            for seed in seeds:
                for sampler in samplers:
                    began = time.perf_counter()
                    study = _run(objective, first or settings, sampler, seed, args.trials)
                    first = first or StudySettings.read(study)
                    result = _measure(study, ctx, dataset, seed, sampler, began)
                    held[(dataset, seed, sampler)] = _held_at_half(study, result)
                    results.append(result)
                    _print_row(result, None, held[(dataset, seed, sampler)])
            assert first is not None
            began = time.perf_counter()
            sweep = _sweep(objective, first, args.trials)
            sweeps.append(_measure(sweep, ctx, dataset, 0, "sweep", began))
            print(
                f"{dataset}: {objective.trained} networks trained, {objective.reused} reused",
                flush=True,
            )
    _report(results, sweeps, held, time.perf_counter() - started, args.trials)
    if args.json:
        with open(args.json, "a") as out:
            for r in [*results, *sweeps]:
                out.write(json.dumps(_record(r)) + "\n")
    return 0


def _record(r: StudyResult) -> dict[str, Any]:
    """A study's figures as JSON-ready values."""
    fields = {k: v for k, v in asdict(r).items() if k not in ("champion", "oracle")}
    return fields | {
        "champion": _name(r.champion), "oracle": _name(r.oracle), "regret": r.regret,
        "within": r.within, "champion_ratio": _size(r.champion, r),
        "oracle_ratio": _size(r.oracle, r), "test_delta": _metric(r.champion, "test_delta"),
    }  # fmt: skip


_HEADER = (
    "| table | seed | sampler | confirmation | champion | size ratio | test delta [95% CI] | "
    "within floor on test | oracle, size ratio (test delta) | regret | sweep's champion, size "
    "ratio (regret in its own study) | champion <= sweep's | wall s (confirmation s) | "
    "confirmation: judged / candidates, trainings, rejected early |"
)


def _print_row(r: StudyResult, sweep: StudyResult | None, held: bool) -> None:
    cost = r.cost
    spent = (
        f"{cost['candidates']} / {cost['of']}, {cost['trainings']}, {cost['rejected_early']}"
        if cost
        else "-"
    )
    rival = (
        "-" if sweep is None else f"{_sized(sweep.champion, sweep)} ({_fmt(sweep.regret, '.2f')})"
    )
    smaller = "-"
    if sweep is not None and r.champion is not None and sweep.champion is not None:
        smaller = "yes" if r.champion.values[1] <= sweep.champion.values[1] else "no"
    flag = " (baseline, though a half-size trial held on test)" if held and _is_base(r) else ""
    print(
        f"| {r.dataset} | {r.seed} | {r.sampler} | {r.confirmed} | {_name(r.champion)}{flag} | "
        f"{_fmt(_size(r.champion, r))} | {_interval(r.champion, 'test')} | "
        f"{'yes' if r.within else 'no'} | {_name(r.oracle)}, {_sized(r.oracle, r)} | "
        f"{_fmt(r.regret, '.2f')} | {rival} | {smaller} | {r.seconds:.0f} "
        f"({r.confirm_seconds:.0f}) | {spent} |",
        flush=True,
    )


def _is_base(r: StudyResult) -> bool:
    return r.champion is not None and bool(r.champion.user_attrs.get("baseline"))


def _report(
    results: list[StudyResult],
    sweeps: list[StudyResult],
    held: dict[tuple[str, int, str], bool],
    seconds: float,
    trials: int,
) -> None:
    print(f"\n{trials} trials per study, {seconds:.0f} s in all; the sweep trains as many\n")
    print(_HEADER)
    print("|" + "---|" * (_HEADER.count("|") - 1))
    sweep_by = {s.dataset: s for s in sweeps}
    for r in results:
        _print_row(r, sweep_by.get(r.dataset), held[(r.dataset, r.seed, r.sampler)])
    for s in sweeps:
        _print_row(s, None, False)
    regrets = [r.regret for r in results if r.regret == r.regret]
    n = len(results)
    bad_baseline = sum(held[(r.dataset, r.seed, r.sampler)] and _is_base(r) for r in results)
    not_larger = sum(
        r.champion is not None
        and sweep_by[r.dataset].champion is not None
        and r.champion.values[1] <= sweep_by[r.dataset].champion.values[1]  # type: ignore[union-attr]
        for r in results
    )
    if regrets:
        print(
            f"\nregret: median {statistics.median(regrets):.2f} (goal <= 2), max {max(regrets):.2f}"
            f", above 4 in {sum(x > 4 for x in regrets)} of {len(regrets)} (goal 0); champion "
            f"within the floor on test in {sum(r.within for r in results)} of {n} (goal >= 90%); "
            f"the baseline though a trial of at most half its size held on test with its whole "
            f"interval: {bad_baseline} (goal 0); champion <= the sweep's: {not_larger} of {n}"
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
