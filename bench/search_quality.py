"""Search quality in one run: samplers against random, and the default search against a sweep.

For each bundled dataset the default job (configs/default.yaml: MLP 256-256-128, both
approaches, the scale x shape space with its uniform ladder) runs as `tabslim search` would:
baseline first, then the ladder and its refinement where it crossed the floor, then the
sampler's own trials, on in-memory studies that differ
only in sampler and seed. The data split and training seed stay fixed, so a candidate trains
identically whoever proposes it; results are cached by candidate key within a dataset, and
the output says how many trials were trained and how many reused.

Per study (dataset x seed x sampler):
- hypervolume (`search.hypervolume`, gains over the baseline clipped), divided by random's on
  the same dataset and seed: goal >= 1.2 as the median over datasets x seeds;
- the champion (`search.pareto.champion`, confident by default) after the confirmation step
  `tabslim search` runs (`search.confirm: auto`: 5 folds where the validation split cannot
  resolve the floor and folds can), beside the split's own champion: its parameter ratio and
  its test delta with the paired 95% interval; goal: within the floor on test in >= 90% of
  studies.

Beside them, a naive uniform sweep at the same number of trained networks: the baseline plus
trials-1 shapes that multiply every layer alike (geometric from 0.9 down to the space's scale
low), each trained from scratch. Its champion, by the same rule and the same confirmation step,
is compared with the search's, and so is its champion on its validation split alone (what a
bare sweep script would pick) and its smallest network within the floor *on test* (an oracle
choice no search can make). Goal: the champion is smaller at equal test accuracy.

`--samplers` may also name `random-search`: the random sampler without the ladder (plain random
search). The hypervolume table also prints the box's volume over random's: no sampler can beat
random by more than that.

Run: `.venv/bin/python bench/search_quality.py [--trials 20] [--seeds 0,1,2]
[--datasets digits,breast_cancer,my_table.csv:target] [--samplers tpe,random]
[--max-epochs N] [--confirm-folds K]`. With `--confirm-folds K`, every front (the sweep's too)
is confirmed by K folds (`search.confirm: K`, `confirm_by: folds`) instead of the default.
It prints markdown tables; it asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
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

from search import pareto  # noqa: E402
from search.adapters import set_training_threads  # noqa: E402
from search.config import Config, load_config, override  # noqa: E402
from search.confirm import confirm_search  # noqa: E402
from search.context import build_context, study_settings  # noqa: E402
from search.hypervolume import dominated_volume, hypervolume  # noqa: E402
from search.objective import SearchContext, draw_candidate, run_trial  # noqa: E402
from search.samplers import make_sampler  # noqa: E402
from search.search_job import refine_after_ladder  # noqa: E402
from search.space import baseline_params, ladder_params, uniform_params  # noqa: E402
from search.study import directions  # noqa: E402
from search.study_settings import StudySettings, is_feasible  # noqa: E402

REFERENCE = "random"
# Plain random search: the random sampler from the first trial after the baseline, without the
# ladder and its refinement, which are part of the default search's strategy.
RANDOM_SEARCH = "random-search"
_COPIED = ("approach", "hidden", "plan", "candidate_key", "spec", "metrics", "prune_details")
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
        if key in self.cache:
            self.reused += 1
            values, attrs = self.cache[key]
            for name, value in attrs.items():
                trial.set_user_attr(name, value)
            settings = StudySettings.read(trial.study)
            trial.set_constraint("metric_floor", settings.violation(values[0]))
            return values
        self.trained += 1
        values = run_trial(trial, self.ctx)
        stored = trial.study._storage.get_trial(trial._trial_id).user_attrs  # noqa: SLF001
        self.cache[key] = (values, {k: stored[k] for k in _COPIED if k in stored})
        return values


@dataclass
class StudyResult:
    dataset: str
    seed: int
    sampler: str
    hypervolume: float
    champion: FrozenTrial | None
    champion_note: str
    baseline_params: float
    # The study's smallest trial within the floor on test: the same oracle choice as the sweep's.
    oracle: FrozenTrial | None = None
    # The same volume with the size axis on a log scale (see `_log_size_hypervolume`).
    log_hypervolume: float = float("nan")
    # The clipped box's volume: the most hypervolume any study could reach.
    box: float = float("nan")
    # The champion on the validation split alone, before the confirmation step.
    split_champion: FrozenTrial | None = None
    # The confirmation step the product chose (`search.confirm`), e.g. "5 folds" or "none".
    confirmed: str = "none"


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


def _log_size_hypervolume(study: optuna.Study, decades: float = 3.0) -> float:
    """The clipped hypervolume, but with the size ratio on a log scale (1x down to 10^-decades).

    Not the issue's metric: a supplementary figure. In the linear box, going from 0.02x to 0.01x
    adds almost nothing once a network is small; on a log axis it adds as much as 0.2x to 0.1x.
    """
    settings = StudySettings.read(study)
    trials = pareto.complete_trials(study)
    base = pareto.baseline_trial(study, trials)
    if base is None or settings.baseline_metric is None:
        return 0.0
    sign = 1.0 if settings.higher_is_better else -1.0
    points = [
        (
            max(sign * (settings.baseline_metric - t.values[0]), 0.0),
            decades + np.log10(max(t.values[1] / base.values[1], 10.0**-decades)),
            t.values[2] / base.values[2],
        )
        for t in trials
        if is_feasible(t)
    ]
    reference = np.array([settings.allowed_drop() or 1e-9, decades, 1.25])
    return dominated_volume(np.array(points, dtype=float).reshape(-1, 3), reference)


def _sweep_best(study: optuna.Study, drop: float, higher: bool) -> FrozenTrial | None:
    """The smallest sweep network whose test delta is within the floor (an oracle choice)."""
    within = [
        t
        for t in study.get_trials(states=(TrialState.COMPLETE,))
        if (d := _metric(t, "test_delta")) == d and (d >= -drop if higher else d <= drop)
    ]
    return min(within, key=lambda t: t.values[1], default=None)


def _within(delta: float, drop: float, higher: bool) -> bool:
    return delta >= -drop if higher else delta <= drop


def _fmt(value: float, spec: str = ".3f") -> str:
    return "-" if value != value else f"{value:{spec}}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default="digits,breast_cancer")
    parser.add_argument("--samplers", default="tpe,random")
    parser.add_argument("--max-epochs", type=int, default=None)
    # Confirm every study's front, and the sweep's, by this many folds instead of the default
    # (`search.confirm: auto`).
    parser.add_argument("--confirm-folds", type=int, default=0)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    started = time.perf_counter()
    results: list[StudyResult] = []
    sweep_rows: list[SweepResult] = []
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
            drop, higher = settings.max_metric_drop, settings.higher_is_better
            first: StudySettings | None = None
            for seed in seeds:
                for sampler in samplers:
                    study = _run(objective, first or settings, sampler, seed, args.trials)
                    first = first or StudySettings.read(study)
                    split = pareto.champion(study).trial
                    confirmed = _confirm(study, ctx)
                    picked = pareto.champion(study)
                    base = pareto.baseline_trial(study, pareto.complete_trials(study))
                    results.append(
                        StudyResult(
                            dataset, seed, sampler, hypervolume(study), picked.trial,
                            picked.note, base.values[1] if base else float("nan"),
                            _sweep_best(study, drop, higher), _log_size_hypervolume(study),
                            StudySettings.read(study).allowed_drop() * 1.0 * 1.25, split,
                            confirmed,
                        )
                    )  # fmt: skip
            assert first is not None
            sweep = _sweep(objective, first, args.trials)
            split = pareto.champion(sweep).trial
            confirmed = _confirm(sweep, ctx)
            sweep_rows.append(
                SweepResult(
                    dataset, _sweep_best(sweep, drop, higher), pareto.champion(sweep).trial,
                    first, drop, higher, split, confirmed,
                )
            )  # fmt: skip
            print(
                f"{dataset}: {objective.trained} networks trained, {objective.reused} reused",
                flush=True,
            )
    _report(results, sweep_rows, samplers, time.perf_counter() - started, args.trials)
    return 0


@dataclass
class SweepResult:
    dataset: str
    # Its smallest network within the floor on test (an oracle choice no search can make).
    oracle: FrozenTrial | None
    # Its champion by the search's own rule (confident by default), after the same
    # confirmation step as the search's (`search.confirm`).
    champion: FrozenTrial | None
    settings: StudySettings
    drop: float
    higher: bool
    # Its champion on the validation split alone, as a bare sweep script would pick it.
    split_champion: FrozenTrial | None = None
    confirmed: str = "none"


def _ratio_cells(
    results: list[StudyResult], samplers: list[str], value: str
) -> tuple[list[float], list[float]]:
    """Print one row per (dataset, seed) of `value` per sampler; return the tpe/random ratios
    and, for the hypervolume, the box's ceiling over random (NaN otherwise)."""
    table = {(r.dataset, r.seed, r.sampler): getattr(r, value) for r in results}
    extra = RANDOM_SEARCH in samplers and "tpe" in samplers
    header = " | ".join(f"HV {s}" for s in samplers)
    print(
        f"| dataset | seed | {header} | tpe / random | most any sampler could reach / random |"
        + (" tpe / random-search |" if extra else "")
    )
    print("|---|---|" + "---|" * (len(samplers) + 2 + extra))
    ratios, bounds = [], []
    for dataset, seed in sorted({(r.dataset, r.seed) for r in results}):
        ref = table.get((dataset, seed, REFERENCE), float("nan"))
        ratio = table.get((dataset, seed, "tpe"), float("nan")) / ref if ref else float("inf")
        ratios.append(ratio)
        # The clipped box: no trial can add volume outside (allowed drop, 1x size, 1.25x time).
        box = next(r.box for r in results if r.dataset == dataset)
        bound = box / ref if ref and value == "hypervolume" else float("nan")
        bounds.append(bound)
        cells = " | ".join(
            _fmt(table.get((dataset, seed, s), float("nan")), ".4f") for s in samplers
        )
        row = f"| {dataset} | {seed} | {cells} | {_fmt(ratio, '.2f')} | {_fmt(bound, '.2f')} |"
        if extra:
            plain = table.get((dataset, seed, RANDOM_SEARCH), float("nan"))
            versus = table[(dataset, seed, "tpe")] / plain if plain else float("inf")
            row += f" {_fmt(versus, '.2f')} |"
        print(row)
    return ratios, bounds


def _summary(cells: tuple[list[float], list[float]], what: str) -> None:
    ratios, bounds = cells
    finite = [r for r in ratios if r == r]
    if not finite:
        return
    print(
        f"\n{what}: median tpe/random ratio {statistics.median(finite):.2f} "
        f"(tpe ahead in {sum(r > 1 for r in finite)} of {len(finite)}; goal >= 1.2)"
    )
    # Where random's volume already lies within 1.2x of the box, no sampler can meet the goal;
    # the median over the other pairs is the goal's test where it can be met at all.
    room = [r for r, b in zip(ratios, bounds, strict=True) if r == r and b == b and b >= 1.2]
    if any(b == b for b in bounds):
        print(
            f"pairs where the box leaves room for 1.2x (most any sampler could reach / random "
            f">= 1.2): {len(room)} of {len(finite)}"
            + (f", median tpe/random {statistics.median(room):.2f}" if room else "")
        )
    print()


def _report(
    results: list[StudyResult],
    sweeps: list[SweepResult],
    samplers: list[str],
    seconds: float,
    trials: int,
) -> None:
    print(f"\n{trials} trials per study, {seconds:.0f} s in all\n")
    _summary(_ratio_cells(results, samplers, "hypervolume"), "clipped hypervolume")
    _summary(
        _ratio_cells(results, samplers, "log_hypervolume"),
        "supplementary, size axis on a log scale",
    )
    sweep_by = {row.dataset: row for row in sweeps}
    print(
        "| dataset | seed | sampler | confirmation | champion | param ratio | val delta [95% CI] "
        "| test delta [95% CI] | within floor on test | the split's champion, param ratio (test "
        "delta) | sweep's champion, same rule and confirmation, param ratio (test delta) | "
        "smaller than the sweep's champion | sweep's champion on its split alone | sweep's best "
        "on test, param ratio (test delta) | study's best on test, param ratio (test delta) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    counts = dict.fromkeys(
        ("within", "smaller", "larger", "naive_smaller", "naive_larger", "oracle_smaller",
         "oracle_equal"), 0,
    )  # fmt: skip
    for r in results:
        sweep = sweep_by[r.dataset]
        chosen = r.champion
        test = _metric(chosen, "test_delta")
        within = _within(test, sweep.drop, sweep.higher)
        counts["within"] += within
        # Like for like: both picked by the same rule, both within the floor on test.
        for rival, key in ((sweep.champion, ""), (sweep.split_champion, "naive_")):
            rival_within = _within(_metric(rival, "test_delta"), sweep.drop, sweep.higher)
            if chosen is not None and rival is not None:
                counts[key + "smaller"] += (
                    chosen.values[1] < rival.values[1] and within and rival_within
                )
                counts[key + "larger"] += chosen.values[1] > rival.values[1]
        best, oracle = sweep.oracle, r.oracle
        counts["oracle_smaller"] += (
            oracle is not None and best is not None and (oracle.values[1] < best.values[1])
        )
        counts["oracle_equal"] += (
            oracle is not None and best is not None and (oracle.values[1] == best.values[1])
        )
        smaller = (
            chosen is not None
            and sweep.champion is not None
            and chosen.values[1] < sweep.champion.values[1]
        )
        print(
            f"| {r.dataset} | {r.seed} | {r.sampler} | {r.confirmed} | {_name(chosen)} | "
            f"{_fmt(_size(chosen, r))} | {_interval(chosen, 'val')} | "
            f"{_interval(chosen, 'test')} | {'yes' if within else 'no'} | "
            f"{_sized(r.split_champion, r)} | {sweep.confirmed}: {_sized(sweep.champion, r)} | "
            f"{'yes' if smaller else 'no'} | {_sized(sweep.split_champion, r)} | "
            f"{_sized(best, r)} | {_sized(oracle, r)} |"
        )
    n = len(results)
    print(
        f"\nchampion within the floor on test: {counts['within']} of {n} studies (goal >= 90%); "
        f"smaller than the sweep's champion (same rule and confirmation), both within the floor "
        f"on test: {counts['smaller']} of {n} (larger: {counts['larger']}); smaller than the "
        f"sweep's champion on its split alone (a bare sweep script), both within the floor on "
        f"test: {counts['naive_smaller']} of {n} (larger: {counts['naive_larger']}); "
        f"the study's own best on test smaller than the sweep's best on test: "
        f"{counts['oracle_smaller']} of {n} (the same network: {counts['oracle_equal']})"
    )


def _sized(trial: FrozenTrial | None, result: StudyResult) -> str:
    """ "0.005 (-0.0018)": a trial's parameter ratio and test delta."""
    return f"{_fmt(_size(trial, result))} ({_fmt(_metric(trial, 'test_delta'), '+.4f')})"


def _name(trial: FrozenTrial | None) -> str:
    if trial is None:
        return "-"
    return "baseline" if trial.user_attrs.get("baseline") else str(trial.number)


def _size(trial: FrozenTrial | None, result: StudyResult) -> float:
    return trial.values[1] / result.baseline_params if trial else float("nan")


def _interval(trial: FrozenTrial | None, split: str) -> str:
    delta = _metric(trial, f"{split}_delta")
    low, high = _metric(trial, f"{split}_delta_ci_low"), _metric(trial, f"{split}_delta_ci_high")
    if delta != delta:
        return "-"
    return f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]"


if __name__ == "__main__":
    sys.exit(main())
