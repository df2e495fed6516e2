"""Search quality: hypervolume of the front after equal trial budgets, per sampler, in one run.

For each bundled dataset the product's default baseline (configs/default.yaml: hidden
[256, 256, 128], its training settings) is trained once. Then, for every seed and every sampler
of `search.study.make_sampler`, a fresh in-memory study gets the same study attributes (baseline
trial and metric included, so the same accuracy floor and early stop), the baseline enqueued as
trial 0 exactly as `tabslim search` does, and the same number of trials of `run_trial`. Only the
sampler and its seed differ: the data split and the training seed stay fixed.

Figures per study:
- `pareto.hypervolume(study)`: the volume the feasible trials dominate in (metric loss, parameter
  ratio, latency ratio) relative to the baseline, up to the floor. Each sampler's value is divided
  by Optuna's RandomSampler's value on the same dataset and seed; above 1 beats random.
- `pareto.recommend(study)`: the smallest model within the floor (0.5 point of accuracy by
  default), with its parameter ratio, its latency ratio as the search measured it (objective
  latency, measured trial by trial, so noisy on a shared machine) and, for a steadier figure, its
  latency ratio interleaved with the baseline in one `compare_latency` call.

Training is seeded, so an identical sample (widths, or pruning plan) trains identically
whichever sampler proposes it: a result is cached by sample key per dataset and reused across
samplers and seeds (the objective latency of a reused result is the one measured when it was
first trained). The output says how many trials came from the cache.

To save time, trials measure only the objective latency (onnxruntime, batch 1024) instead of
every runtime and batch size of `measure`, and the full run caps training at 20 epochs
(configs/default.yaml: 40; early stopping usually ends the baseline before 20 anyway);
`--max-epochs` sets it.

With the default approaches (scratch and prune in one study) the trials have no parameter in
common: the baseline has only `multiplier_*`, scratch trials `approach` and `multiplier_*`, prune
trials `approach`, `keep_ratio_*` and the plan's. Samplers that model only the intersection of
the search spaces (nsga2, gp) then draw every parameter from their independent RandomSampler with
the same seed, so they propose exactly what `random` proposes; the cache makes them nearly free,
and the table's "same as random" column shows it. TPE (`group=True`) models each group.

Run: `.venv/bin/python bench/search_quality.py [--quick] [--trials N] [--datasets a,b]
[--samplers tpe,random] [--seeds 0,1,2] [--max-epochs N] [--approaches scratch] [--verbose]`.
It prints; it does not assert.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from lightning_modules.datasets import BUNDLED
from lightning_modules.networks import MLP
from search import pareto
from search.adapters import set_training_threads
from search.config import DEFAULT_CONFIG, Approach, Config, validate
from search.latency import compare_latency
from search.objective import SearchContext, floor_violation, run_trial
from search.pyfunc_model import load_network
from search.search_job import build_context, study_attrs
from search.space import baseline_params, draw_approach, draw_plan, draw_shape
from search.study import ATTR, directions, make_sampler

SAMPLERS: tuple[str, ...] = ("tpe", "random", "nsga2", "gp", "qmc")
REFERENCE = "random"
# The goal: within the floor, well under a quarter of the baseline's parameters.
GOAL_PARAM_RATIO = 0.25
# What `tabslim search` catches; a failed trial still counts towards the trial budget here.
_TRIAL_ERRORS = (RuntimeError, FloatingPointError)
# User attributes of a trained trial that a reused result copies (see `run_trial`).
_COPIED = ("approach", "hidden", "plan", "candidate_key", "spec", "metrics", "stopped_below_floor")


@dataclass(frozen=True)
class Budget:
    datasets: tuple[str, ...]
    samplers: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int  # per study, the baseline included
    max_epochs: int | None  # None: configs/default.yaml's
    approaches: tuple[str, ...] | None = None  # None: the config's default (scratch and prune)
    verbose: bool = False


# qmc is left out of the full run by default: it needs a whole extra set of trainings (its
# proposals share little with the others'), and its seed changes only the part it does not
# draw from its unscrambled Sobol sequence. nsga2 and gp are nearly free: see the module docstring.
FULL = Budget(
    ("digits", "breast_cancer"), ("tpe", "random", "nsga2", "gp"), (0, 1, 2), 20, max_epochs=20
)
QUICK = Budget(("breast_cancer", "digits"), SAMPLERS, (0,), trials=5, max_epochs=4)


@dataclass
class _Done:
    values: tuple[float, float, float]
    attrs: dict[str, Any]
    directory: Path  # where the network was saved when it was trained


def _candidate_key(trial: optuna.Trial, ctx: SearchContext) -> str:
    """The key `run_trial` will give this trial, drawn the way it draws it.

    Optuna returns the same value when a trial suggests a parameter twice, so drawing here and
    again inside `run_trial` gives the same sample.
    """
    search = ctx.config.search
    if trial.user_attrs.get("baseline", False):
        approach = "scratch"
    else:
        approach = draw_approach(trial, search.approaches)
    if approach == "scratch":
        return draw_shape(trial, search.space, ctx.baseline.hidden).key()
    return draw_plan(trial, search.prune, len(ctx.baseline.hidden), search.space).key()


@dataclass
class CachedObjective:
    """`run_trial`, but a sample key trained before (any study of this dataset) is reused."""

    ctx: SearchContext
    verbose: bool = False
    cache: dict[str, _Done] = field(default_factory=dict)
    trained: int = 0
    reused: int = 0
    objective_seconds: float = 0.0

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        started = time.perf_counter()
        try:
            return self._run(trial)
        finally:
            self.objective_seconds += time.perf_counter() - started

    def _run(self, trial: optuna.Trial) -> tuple[float, float, float]:
        key = _candidate_key(trial, self.ctx)
        done = self.cache.get(key)
        if done is not None:
            self.reused += 1
            for key, value in done.attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("cached", True)
            attrs = trial.study.user_attrs[ATTR]
            trial.set_constraint("metric_floor", floor_violation(done.values[0], attrs))
            return done.values
        self.trained += 1
        started = time.perf_counter()
        values = run_trial(trial, self.ctx)
        attrs = {k: trial.user_attrs[k] for k in _COPIED if k in trial.user_attrs}
        directory = self.ctx.trials_dir / f"trial-{trial.number}"
        self.cache[key] = _Done(values, attrs, directory)
        if self.verbose:
            plan = attrs.get("plan") or {}
            how = f"{plan.get('criterion')}/{plan.get('schedule')}/ft{plan.get('fine_tune_epochs')}"
            print(
                f"    trial {trial.number}: {attrs['approach']} "
                f"{'-'.join(map(str, attrs['hidden']))}{' ' + how if plan else ''}, "
                f"val {values[0]:.4f}, {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        return values


@dataclass
class StudyResult:
    dataset: str
    sampler: str
    seed: int
    hypervolume: float
    complete: int
    failed: int
    feasible: int
    pruned: int  # complete trials that took the prune approach
    keys: tuple[str, ...]  # sample keys of the complete trials, in trial order
    recommended: FrozenTrial | None
    seconds: float
    sampler_seconds: float  # wall time outside the objective: the sampler's own work


@dataclass
class Baseline:
    dataset: str
    trial: FrozenTrial
    attrs: dict[str, Any]
    directory: Path
    rows_train: int
    rows_val: int

    @property
    def metric(self) -> float:
        return float(self.trial.values[0])

    @property
    def parameters(self) -> float:
        return float(self.trial.user_attrs["metrics"]["parameters"])

    @property
    def latency(self) -> float:
        return float(self.trial.values[2])


@dataclass
class Recommendation:
    dataset: str
    sampler: str
    seed: int
    approach: str
    widths: str
    param_ratio: float
    latency_ratio: float  # objective latencies, each measured in its own trial
    interleaved: float  # compare_latency against the baseline, side by side
    val_delta: float
    test_delta: float
    is_baseline: bool


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*is out of range for distribution.*")
    # Lightning's advice on loader workers and small batches: about training, not the search.
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def _config(dataset: str, budget: Budget, root: Path) -> Config:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data"] = {**raw["data"], "dataset": dataset}
    raw["data"].pop("path", None)
    if budget.max_epochs is not None:
        raw["training"]["max_epochs"] = budget.max_epochs
    if budget.approaches is not None:
        raw["search"]["approaches"] = list(budget.approaches)
    latency = raw["search"]["latency"]
    raw["measure"] |= {"batch_sizes": [latency["batch_size"]], "runtimes": [latency["runtime"]]}
    raw["search"] |= {"n_trials": budget.trials, "storage": str(root / "unused.journal")}
    # build_context touches no tracking store, but keep everything out of mlruns/ all the same.
    raw["tracking"] = {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "bench"}
    return validate(raw, "bench")


def _new_study(ctx: SearchContext, attrs: dict[str, Any], sampler: str, seed: int) -> optuna.Study:
    study = optuna.create_study(
        directions=directions(attrs["higher_is_better"]), sampler=make_sampler(sampler, seed)
    )
    study.set_user_attr(ATTR, attrs)
    n_layers = len(ctx.baseline.hidden)
    # As `tabslim search` does: the baseline is trial 0, proposed through the study's sampler.
    study.enqueue_trial(
        baseline_params(ctx.config.search.space, n_layers), user_attrs={"baseline": True}
    )
    return study


def _train_baseline(ctx: SearchContext, objective: CachedObjective, dataset: str) -> Baseline:
    attrs = study_attrs(ctx)
    study = _new_study(ctx, attrs, REFERENCE, 0)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    if trial.state != TrialState.COMPLETE:
        raise RuntimeError(f"the {dataset} baseline did not finish: {trial.state.name}")
    return Baseline(
        dataset=dataset,
        trial=trial,
        attrs=dict(study.user_attrs[ATTR]),
        directory=ctx.trials_dir / "trial-0",
        rows_train=len(ctx.data.train_frame),
        rows_val=len(ctx.data.val_frame),
    )


def _run_study(
    ctx: SearchContext,
    objective: CachedObjective,
    baseline: Baseline,
    sampler: str,
    seed: int,
    trials: int,
) -> StudyResult:
    study = _new_study(ctx, baseline.attrs, sampler, seed)
    before = objective.objective_seconds
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials, catch=_TRIAL_ERRORS, gc_after_trial=True)
    seconds = time.perf_counter() - started
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert study.user_attrs[ATTR]["baseline_trial"] == 0 and complete[0].user_attrs["baseline"]
    return StudyResult(
        dataset=baseline.dataset,
        sampler=sampler,
        seed=seed,
        hypervolume=pareto.hypervolume(study),
        complete=len(complete),
        failed=len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        feasible=sum(all(v <= 0 for v in t.constraints.values()) for t in complete),
        pruned=sum(t.user_attrs.get("approach") == "prune" for t in complete),
        keys=tuple(str(t.user_attrs["candidate_key"]) for t in complete),
        recommended=pareto.recommend(study),
        seconds=seconds,
        sampler_seconds=seconds - (objective.objective_seconds - before),
    )


def _recommendation(
    result: StudyResult,
    baseline: Baseline,
    objective: CachedObjective,
    interleaved: dict[str, float],
    metric: str,
) -> Recommendation | None:
    trial = result.recommended
    if trial is None:
        return None
    metrics = trial.user_attrs["metrics"]
    base_metrics = baseline.trial.user_attrs["metrics"]
    key = trial.user_attrs["candidate_key"]
    if key not in interleaved:
        if key == baseline.trial.user_attrs["candidate_key"]:
            interleaved[key] = 1.0
        else:
            _, candidate, _ = load_network(objective.cache[key].directory)
            _, reference, _ = load_network(baseline.directory)
            latency = objective.ctx.config.search.latency
            interleaved[key] = compare_latency(
                candidate,
                reference,
                runtime=latency.runtime,
                batch_size=latency.batch_size,
                threads=objective.ctx.config.measure.threads,
            ).median
    return Recommendation(
        dataset=result.dataset,
        sampler=result.sampler,
        seed=result.seed,
        approach=str(trial.user_attrs.get("approach", "")),
        widths="-".join(map(str, trial.user_attrs["hidden"])),
        param_ratio=metrics["parameters"] / baseline.parameters,
        latency_ratio=trial.values[2] / baseline.latency,
        interleaved=interleaved[key],
        val_delta=trial.values[0] - baseline.metric,
        test_delta=metrics[f"test_{metric}"] - base_metrics[f"test_{metric}"],
        is_baseline=key == baseline.trial.user_attrs["candidate_key"],
    )


def _ratio(value: float, reference: float) -> float:
    if reference > 0:
        return value / reference
    return math.inf if value > 0 else math.nan


def _fmt(value: float, spec: str = ".3f") -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:{spec}}"


def _median(values: list[float]) -> float:
    # 0/0 ratios (neither sampler found anything within the floor) say nothing; leave them out.
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def _print_baselines(baselines: list[Baseline], config: Config) -> None:
    training = config.training
    print()
    print(
        f"Baselines (hidden {list(config.model.hidden)}, max_epochs {training.max_epochs}, "
        f"batch {training.batch_size}, lr {training.lr}, patience {training.patience}; "
        f"floor: val metric - {config.search.max_metric_drop})"
    )
    header = (
        f"{'dataset':<26}{'train/val':>11}{'params':>9}{'val':>8}{'test':>8}{'lat ms':>8}"
        f"{'epochs':>7}{'train s':>8}"
    )
    print(header)
    print("-" * len(header))
    for b in baselines:
        m = b.trial.user_attrs["metrics"]
        metric = b.attrs["metric"]
        print(
            f"{b.dataset:<26}{f'{b.rows_train}/{b.rows_val}':>11}{b.parameters:>9,.0f}"
            f"{b.metric:>8.4f}{m[f'test_{metric}']:>8.4f}{b.latency:>8.3f}"
            f"{m['epochs']:>7.0f}{m['train_seconds']:>8.1f}"
        )


def _print_hypervolumes(results: list[StudyResult], budget: Budget) -> dict[str, float]:
    """The HV table and the medians of each sampler's ratio to random; returns overall medians."""
    others = [s for s in budget.samplers if s != REFERENCE]
    by_key = {(r.dataset, r.seed, r.sampler): r for r in results}
    print()
    print(
        f"Hypervolume x 1000 after {budget.trials} trials (baseline included), per dataset and "
        f"sampler seed; ratio = sampler HV / {REFERENCE} HV"
    )
    header = f"{'dataset':<26}{'seed':>5}" + "".join(f"{s:>9}" for s in budget.samplers)
    header += "".join(f"{s + '/' + REFERENCE[:4]:>12}" for s in others)
    print(header)
    print("-" * len(header))
    ratios: dict[tuple[str, str], list[float]] = {}
    for dataset in budget.datasets:
        for seed in budget.seeds:
            hv = {s: by_key[(dataset, seed, s)].hypervolume for s in budget.samplers}
            line = f"{dataset:<26}{seed:>5}" + "".join(
                f"{1e3 * hv[s]:>9.3f}" for s in budget.samplers
            )
            if REFERENCE in hv:
                for s in others:
                    ratio = _ratio(hv[s], hv[REFERENCE])
                    ratios.setdefault((dataset, s), []).append(ratio)
                    line += f"{_fmt(ratio):>12}"
            print(line)
    overall: dict[str, float] = {}
    if REFERENCE not in budget.samplers:
        return overall
    print()
    print(f"Median ratio to {REFERENCE} (over seeds; overall: over every dataset and seed)")
    header = f"{'':<26}" + "".join(f"{s:>9}" for s in others)
    print(header)
    for dataset in budget.datasets:
        medians = [_median(ratios[(dataset, s)]) for s in others]
        print(f"{dataset:<26}" + "".join(f"{_fmt(m):>9}" for m in medians))
    for s in others:
        overall[s] = _median([r for d in budget.datasets for r in ratios[(d, s)]])
    print(f"{'overall':<26}" + "".join(f"{_fmt(overall[s]):>9}" for s in others))
    # Steadier where one seed's random HV is (near) zero: the HVs summed over seeds, divided.
    print(f"Ratio of HV summed over seeds to {REFERENCE}'s")
    for dataset in budget.datasets:
        total = {
            s: sum(by_key[(dataset, seed, s)].hypervolume for seed in budget.seeds)
            for s in budget.samplers
        }
        print(
            f"{dataset:<26}"
            + "".join(f"{_fmt(_ratio(total[s], total[REFERENCE])):>9}" for s in others)
        )
    return overall


def _print_winner(results: list[StudyResult], budget: Budget, overall: dict[str, float]) -> None:
    print()
    # Best HV per (dataset, seed); a tie at the top counts for each sampler that shares it.
    wins = dict.fromkeys(budget.samplers, 0)
    for dataset in budget.datasets:
        for seed in budget.seeds:
            group = [r for r in results if r.dataset == dataset and r.seed == seed]
            top = max(r.hypervolume for r in group)
            for r in group:
                wins[r.sampler] += r.hypervolume == top
    pairs = len(budget.datasets) * len(budget.seeds)
    reference = {(r.dataset, r.seed): r.keys for r in results if r.sampler == REFERENCE}
    print(
        f"sampler  wins(of {pairs})  feasible  pruned  same as {REFERENCE}  "
        "outside objective ms/trial   (medians over studies)"
    )
    for s in budget.samplers:
        mine = [r for r in results if r.sampler == s]
        same = [_shared_prefix(r.keys, reference.get((r.dataset, r.seed), ())) for r in mine]
        print(
            f"{s:<9}{wins[s]:>10}{statistics.median(r.feasible for r in mine):>10.0f}"
            f"{statistics.median(r.pruned for r in mine):>8.0f}"
            f"{statistics.median(same):>15.0f}"
            f"{statistics.median(1e3 * r.sampler_seconds / r.complete for r in mine):>28.1f}"
        )
    print(
        f"same as {REFERENCE}: how many first trials proposed exactly what {REFERENCE} with the "
        "same seed proposed (baseline included);"
    )
    print("outside objective: the sampler's own work plus Optuna's bookkeeping and gc per trial")
    if overall:
        scores = {REFERENCE: 1.0, **overall}
        ranked = sorted(scores, key=lambda s: -scores[s] if not math.isnan(scores[s]) else math.inf)
        print(
            f"Ranking by overall median HV ratio to {REFERENCE}: "
            + ", ".join(f"{s} ({_fmt(scores[s])})" for s in ranked)
        )
        tied = [s for s in ranked if scores[s] == scores[ranked[0]]]
        print(f"Winner: {ranked[0]}" if len(tied) == 1 else f"Winner: {', '.join(tied)} (tied)")


def _shared_prefix(keys: tuple[str, ...], reference: tuple[str, ...]) -> int:
    count = 0
    for mine, theirs in zip(keys, reference, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def _print_recommendations(recs: list[Recommendation], metric_drop: float) -> None:
    print()
    print(
        f"Recommended model (pareto.recommend: smallest within the floor, val drop <= "
        f"{metric_drop}) vs the baseline"
    )
    header = (
        f"{'dataset':<26}{'sampler':<8}{'seed':>5}  {'approach':<9}{'widths':<14}{'params':>8}"
        f"{'lat obj':>9}"
        f"{'lat ilv':>9}{'d val':>9}{'d test':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in recs:
        widths = "baseline" if r.is_baseline else r.widths
        print(
            f"{r.dataset:<26}{r.sampler:<8}{r.seed:>5}  {r.approach:<9}{widths:<14}"
            f"{r.param_ratio:>8.3f}"
            f"{r.latency_ratio:>9.3f}{r.interleaved:>9.3f}{r.val_delta:>+9.4f}"
            f"{r.test_delta:>+9.4f}"
        )
    print()
    print("params, lat obj, lat ilv: ratios to the baseline; lat obj from the objective latencies")
    print("(each measured alone in its trial: noisy), lat ilv from compare_latency (candidate and")
    print("baseline interleaved in one call: steadier); d val / d test: metric minus baseline.")
    print()
    print(f"Per dataset and sampler, median over seeds (goal: param ratio < {GOAL_PARAM_RATIO}):")
    header = (
        f"{'dataset':<26}{'sampler':<8}{'params':>8}{'lat obj':>9}{'lat ilv':>9}{'d test':>9}"
        f"{'best params':>13}"
    )
    print(header)
    for dataset in dict.fromkeys(r.dataset for r in recs):
        for sampler in dict.fromkeys(r.sampler for r in recs):
            mine = [r for r in recs if r.dataset == dataset and r.sampler == sampler]
            if not mine:
                continue
            print(
                f"{dataset:<26}{sampler:<8}"
                f"{statistics.median(r.param_ratio for r in mine):>8.3f}"
                f"{statistics.median(r.latency_ratio for r in mine):>9.3f}"
                f"{statistics.median(r.interleaved for r in mine):>9.3f}"
                f"{statistics.median(r.test_delta for r in mine):>+9.4f}"
                f"{min(r.param_ratio for r in mine):>13.3f}"
            )
    for dataset in dict.fromkeys(r.dataset for r in recs):
        best = min((r for r in recs if r.dataset == dataset), key=lambda r: r.param_ratio)
        verdict = "met" if best.param_ratio < GOAL_PARAM_RATIO else "NOT met"
        print(
            f"{dataset}: smallest within the floor in any study {best.widths} ({best.approach}, "
            f"{best.param_ratio:.3f}x params, {best.interleaved:.3f}x latency interleaved, "
            f"test {best.test_delta:+.4f}) by {best.sampler} seed {best.seed}: goal {verdict}"
        )


def _csv(text: str, name: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"{name} needs at least one value, but got {text!r}")
    return items


def _parse(argv: list[str] | None) -> Budget:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument("--trials", type=int, help="trials per study, the baseline included")
    parser.add_argument("--datasets", help="comma-separated bundled dataset names")
    parser.add_argument("--samplers", help=f"comma-separated, from {', '.join(SAMPLERS)}")
    parser.add_argument("--seeds", help="comma-separated sampler seeds")
    parser.add_argument("--max-epochs", type=int, help="default: configs/default.yaml's")
    parser.add_argument("--approaches", help="comma-separated: scratch, prune (default: both)")
    parser.add_argument("--verbose", action="store_true", help="a line per trained trial")
    args = parser.parse_args(argv)
    budget = replace(QUICK if args.quick else FULL, verbose=args.verbose)
    if args.trials is not None:
        if args.trials < 2:
            parser.error(f"--trials must be at least 2 (baseline + one), but got {args.trials}")
        budget = replace(budget, trials=args.trials)
    if args.datasets is not None:
        datasets = _csv(args.datasets, "--datasets")
        unknown = [d for d in datasets if d not in BUNDLED]
        if unknown:
            parser.error(f"--datasets must be among {sorted(BUNDLED)}, but got {unknown}")
        budget = replace(budget, datasets=datasets)
    if args.samplers is not None:
        samplers = _csv(args.samplers, "--samplers")
        unknown = [s for s in samplers if s not in SAMPLERS]
        if unknown:
            parser.error(f"--samplers must be among {list(SAMPLERS)}, but got {unknown}")
        budget = replace(budget, samplers=samplers)
    if args.seeds is not None:
        try:
            seeds = tuple(int(s) for s in _csv(args.seeds, "--seeds"))
        except ValueError:
            parser.error(f"--seeds must be comma-separated integers, but got {args.seeds!r}")
        budget = replace(budget, seeds=seeds)
    if args.max_epochs is not None:
        if args.max_epochs < 1:
            parser.error(f"--max-epochs must be at least 1, but got {args.max_epochs}")
        budget = replace(budget, max_epochs=args.max_epochs)
    if args.approaches is not None:
        approaches = _csv(args.approaches, "--approaches")
        unknown = [a for a in approaches if a not in get_args(Approach)]
        if unknown:
            parser.error(f"--approaches must be among {get_args(Approach)}, but got {unknown}")
        budget = replace(budget, approaches=approaches)
    return budget


def _commit() -> str:
    """The checkout's commit, for the record (other work may land while a long run goes on)."""
    try:
        found = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return "unknown"
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    budget = _parse(argv)
    _quiet()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    print(f"commit {_commit()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(
        f"datasets {list(budget.datasets)}, samplers {list(budget.samplers)}, seeds "
        f"{list(budget.seeds)}, {budget.trials} trials per study (baseline included), "
        f"approaches {list(budget.approaches or get_args(Approach))}, {os.cpu_count()} CPUs",
        flush=True,
    )
    baselines: list[Baseline] = []
    results: list[StudyResult] = []
    recs: list[Recommendation] = []
    cache_lines: list[str] = []
    config: Config | None = None
    with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
        root = Path(tmp)
        for dataset in budget.datasets:
            config = _config(dataset, budget, root)
            # As `tabslim search` does: training.threads (default 1) torch threads for training.
            threads = set_training_threads(config)
            ctx = build_context(config)
            objective = CachedObjective(
                replace(ctx, trials_dir=root / dataset / "baseline"), verbose=budget.verbose
            )
            baseline = _train_baseline(objective.ctx, objective, dataset)
            baselines.append(baseline)
            # Prune trials read the trained baseline from trial-0 of their own study's folder;
            # handing it over once keeps every study on this one baseline.
            _, network, _ = load_network(baseline.directory)
            assert isinstance(network, MLP)
            ctx.trained_baseline = network
            print(
                f"  {dataset}: baseline val {baseline.metric:.4f}, {threads} training "
                f"thread{'s' if threads != 1 else ''} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            interleaved: dict[str, float] = {}
            for seed in budget.seeds:
                # Rotate the order per seed, so that drifting load favours no sampler.
                shift = seed % len(budget.samplers)
                for sampler in budget.samplers[shift:] + budget.samplers[:shift]:
                    objective.ctx = replace(ctx, trials_dir=root / dataset / f"{sampler}-{seed}")
                    run = functools.partial(_run_study, objective.ctx, objective, baseline)
                    result = run(sampler, seed, budget.trials)
                    results.append(result)
                    rec = _recommendation(result, baseline, objective, interleaved, ctx.metric)
                    if rec is not None:
                        recs.append(rec)
                    print(
                        f"  {dataset} {sampler} seed {seed}: HV {result.hypervolume:.4f}, "
                        f"{result.feasible} feasible, {result.pruned} pruned, "
                        f"{result.seconds:.0f} s "
                        f"({time.perf_counter() - started:.0f} s)",
                        flush=True,
                    )
            runs = len(budget.samplers) * len(budget.seeds) * budget.trials
            cache_lines.append(
                f"{dataset}: {objective.trained} trained, {objective.reused} reused from the "
                f"cache of {runs + 1} trials run (baseline study included)"
            )
    assert config is not None
    _print_baselines(baselines, config)
    overall = _print_hypervolumes(results, budget)
    _print_winner(results, budget, overall)
    order = {s: i for i, s in enumerate(budget.samplers)}
    recs.sort(key=lambda r: (budget.datasets.index(r.dataset), order[r.sampler], r.seed))
    _print_recommendations(recs, config.search.max_metric_drop)
    missing = [r for r in results if r.recommended is None]
    if missing:
        print(f"{len(missing)} studies had no feasible trial (not even the baseline?)")
    print()
    print("Results reused across samplers by sample key (identical widths train identically):")
    for line in cache_lines:
        print(f"  {line}")
    failed = sum(r.failed for r in results)
    if failed:
        print(f"{failed} trials failed (caught as in `tabslim search`; they count as trials)")
    print(
        f"total {time.perf_counter() - started:.0f} s; 1-minute load average {load_start:.2f} at "
        f"start, {os.getloadavg()[0]:.2f} at end, on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
