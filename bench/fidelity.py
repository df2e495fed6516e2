"""Multi-fidelity and distillation against today's default search, side by side in one run.

Per table and seed, three searches, each run as `tabslim search` runs it (baseline, the
uniform ladder and its refinement, the sampler's trials, INT8 copies of the front, then the
confirmation step and the certified champion), on in-memory studies:
- `default`: today's defaults (`search.fidelity: null`, approaches scratch and prune);
- `mf`: `search.fidelity: {min_epochs: 3, reduction: 3}` (rungs at 3, 9 and 27 epochs);
- `mf+distill`: the same, with `distill` as a third approach.

Nothing is cached between studies: a rung's decision depends on the study's other trials.
Per study: the wall time (search plus confirmation), the epochs its trials trained (summed;
a stopped trial counts the epochs it ran), the trials stopped at a rung, the trainings
confirmation spent, the champion (approach, size ratio), its test delta, and its regret: its
size over that of the smallest trial of the same study whose test delta is within the floor
(bench/search_quality.py's yardstick).

Then, per table and training seed, matched widths: the baseline, and the ladder's uniform
shapes (0.25, 0.125, 0.0625 of every layer) trained from scratch and distilled, each with its
paired 95% validation interval against the baseline. Distillation should narrow it.

Run: `.venv/bin/python bench/fidelity.py --datasets a.csv:y,b.csv:z --seeds 0,1,2
--trials 16 [--sample-rows N] [--json out.jsonl]`. It prints Markdown tables; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from search_quality import StudyResult, _config, _measure, _run  # noqa: E402

from lightning_modules.distillation import Distillation, teacher_outputs  # noqa: E402
from lightning_modules.evaluation import row_scores  # noqa: E402
from lightning_modules.networks import build  # noqa: E402
from lightning_modules.training import fit  # noqa: E402
from search.config import Config, override  # noqa: E402
from search.inputs import set_training_threads  # noqa: E402
from search.measure import paired_delta  # noqa: E402
from search.study import (  # noqa: E402
    SearchContext,
    TrialKey,
    baseline_params,
    build_context,
    directions,
    run_trial,
    scratch_settings,
    study_settings,
    uniform_params,
)  # noqa: E402

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "mf": {"search.fidelity": {"min_epochs": 3, "reduction": 3}},
    "mf+distill": {
        "search.fidelity": {"min_epochs": 3, "reduction": 3},
        "search.approaches": ["scratch", "prune", "distill"],
    },
}
MATCHED = (0.25, 0.125, 0.0625)


@dataclass
class Objective:
    """`run_trial` as the search calls it, counting nothing twice (no cache)."""

    ctx: SearchContext

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        return run_trial(trial, self.ctx)


def _fresh(ctx: SearchContext, folder: Path) -> SearchContext:
    """The context with nothing cached from an earlier study (baseline, rows, teacher)."""
    ctx.trained_baseline = ctx.baseline_rows = ctx.teacher = None
    ctx.trials_dir = folder
    return ctx


def _epochs(study: optuna.Study) -> tuple[int, int]:
    """Epochs trained by the study's trials (copies and repeats aside), and trials stopped."""
    epochs = stopped = 0
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        if "repeat_of" in t.user_attrs or "variant_of" in t.user_attrs:
            continue
        epochs += int((t.user_attrs.get("metrics") or {}).get("epochs", 0))
        stopped += TrialKey.RUNG_STOP in t.user_attrs
    return epochs, stopped


def _search(
    config: Config, name: str, dataset: str, seed: int, trials: int, root: Path
) -> dict[str, Any]:
    ctx = _fresh(build_context(config), root / f"{name}-{seed}")
    began = time.perf_counter()
    study = _run(Objective(ctx), study_settings(ctx), "tpe", seed, trials)  # type: ignore[arg-type]
    result: StudyResult = _measure(study, ctx, dataset, seed, "tpe", began)
    epochs, stopped = _epochs(study)
    picked = result.champion
    base = result.baseline_size
    return {
        "dataset": dataset,
        "setting": name,
        "seed": seed,
        "seconds": result.seconds,
        "confirm_seconds": result.confirm_seconds,
        "epochs": epochs,
        "stopped": stopped,
        "trials": len(study.trials),
        "confirm_trainings": int((result.cost or {}).get("trainings", 0)),
        "champion": None if picked is None else picked.number,
        "approach": "" if picked is None else picked.user_attrs.get("approach", ""),
        "baseline": bool(picked is not None and picked.user_attrs.get("baseline")),
        "size_ratio": float("nan") if picked is None else picked.values[1] / base,
        "test_delta": float((picked.user_attrs.get("metrics") or {}).get("test_delta", 0.0))
        if picked is not None
        else float("nan"),
        "within": result.within,
        "regret": result.regret,
    }


def _matched(config: Config, dataset: str, seed: int, root: Path) -> list[dict[str, Any]]:
    """Scratch and distill at the same uniform widths, with their validation intervals."""
    config = override(
        config,
        "bench",
        **{"training.seed": seed, "search.approaches": ["scratch", "prune", "distill"]},
    )
    ctx = _fresh(build_context(config), root / f"matched-{seed}")
    settings = study_settings(ctx)
    study = optuna.create_study(directions=directions(settings.higher_is_better))
    settings.write(study)
    space, n_layers = config.search.space, len(ctx.baseline.group_sizes())
    study.enqueue_trial(baseline_params(space, n_layers), user_attrs={"baseline": True})
    for multiplier in MATCHED:
        for approach in ("scratch", "distill"):
            study.enqueue_trial(
                {"approach": approach, **uniform_params(space, n_layers, multiplier)}
            )
    study.optimize(Objective(ctx), n_trials=1 + 2 * len(MATCHED))
    rows = []
    by_key = {
        (t.user_attrs["approach"], tuple(t.user_attrs["hidden"])): t for t in study.trials[1:]
    }
    for approach, hidden in sorted({(k[0], k[1]) for k in by_key}, key=lambda k: -sum(k[1])):
        if approach != "scratch":
            continue
        scratch, distill = by_key[("scratch", hidden)], by_key[("distill", hidden)]
        row = {"dataset": dataset, "seed": seed, "hidden": "-".join(map(str, hidden))}
        for name, trial in (("scratch", scratch), ("distill", distill)):
            metrics = trial.user_attrs["metrics"]
            row[f"{name}_delta"] = metrics["val_delta"]
            row[f"{name}_half"] = (metrics["val_delta_ci_high"] - metrics["val_delta_ci_low"]) / 2
        rows.append(row)
    return rows


def _grid(
    config: Config, dataset: str, seed: int, combos: list[tuple[float, float]], multiplier: float
) -> list[dict[str, Any]]:
    """One shape (`multiplier` of every layer) from scratch and distilled with each (weight,
    temperature): the paired validation interval against the baseline, and the test delta."""
    config = override(config, "bench", **{"training.seed": seed})
    ctx = build_context(config)
    settings = scratch_settings(config, {}, baseline=True)
    baseline = fit(build(ctx.baseline, seed=seed), ctx.data, settings).network
    base_rows = {s: row_scores(baseline, ctx.data, s) for s in ("val", "test")}
    hidden = [max(1, round(w * multiplier)) for w in ctx.baseline.group_sizes()]
    spec = ctx.baseline.with_group_sizes(hidden)
    teacher = teacher_outputs(baseline, ctx.data)
    rows = []
    for weight, temperature in [(0.0, 1.0), *combos]:
        trained = scratch_settings(config, {}, distill=weight > 0)
        if weight > 0:
            trained = dataclasses.replace(trained, distill=Distillation(weight, temperature))
        network = fit(
            build(spec, seed=seed),
            ctx.data,
            trained,
            teacher=teacher if weight > 0 else None,
            evaluate_test=False,
        ).network
        row: dict[str, Any] = {
            "dataset": dataset,
            "seed": seed,
            "weight": weight,
            "temperature": temperature,
            "higher": ctx.higher_is_better,
        }
        for split in ("val", "test"):
            delta = paired_delta(row_scores(network, ctx.data, split), base_rows[split], ctx.metric)
            row[f"{split}_delta"], row[f"{split}_half"] = delta.delta, delta.half_width
        rows.append(row)
    return rows


def _grid_report(rows: list[dict[str, Any]]) -> None:
    print(
        "\n## Distillation settings at one shape: against scratch (weight 0) per table and seed\n"
    )
    print("| weight | temperature | narrower val interval | median half-width ratio "
          "| median val delta gain | median test delta gain |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    scratch = {(r["dataset"], r["seed"]): r for r in rows if r["weight"] == 0}
    combos = sorted({(r["weight"], r["temperature"]) for r in rows if r["weight"] > 0})
    for weight, temperature in combos:
        own = [r for r in rows if (r["weight"], r["temperature"]) == (weight, temperature)]
        pairs = [(r, scratch[(r["dataset"], r["seed"])]) for r in own]
        # A gain is a better delta: higher accuracy, or lower RMSE.
        sign = 1.0 if not own or own[0]["higher"] else -1.0
        narrower = sum(r["val_half"] < b["val_half"] for r, b in pairs)
        ratio = _median([r["val_half"] / b["val_half"] for r, b in pairs if b["val_half"]])
        val_gain = _median([sign * (r["val_delta"] - b["val_delta"]) for r, b in pairs])
        test_gain = _median([sign * (r["test_delta"] - b["test_delta"]) for r, b in pairs])
        print(f"| {weight:g} | {temperature:g} | {narrower} of {len(pairs)} | {ratio:.3f} "
              f"| {val_gain:+.4f} | {test_gain:+.4f} |")  # fmt: skip


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _report(searches: list[dict[str, Any]], matched: list[dict[str, Any]]) -> None:
    print("\n## Searches\n")
    print(
        "| table | seed | setting | wall s (confirm) | epochs | stopped | confirm trainings "
        "| champion | size ratio | test delta | regret |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in searches:
        champion = "baseline" if r["baseline"] else f"{r['champion']} {r['approach']}"
        print(
            f"| {Path(r['dataset'].split(':')[0]).stem} | {r['seed']} | {r['setting']} "
            f"| {r['seconds']:.0f} ({r['confirm_seconds']:.0f}) | {r['epochs']} | {r['stopped']} "
            f"| {r['confirm_trainings']} | {champion} | {r['size_ratio']:.4f} "
            f"| {r['test_delta']:+.4f} | {r['regret']:.2f} |"
        )
    print("\n## Per setting, against `default` in the same table and seed\n")
    print("| setting | median wall ratio | median epochs ratio | champion <= default's "
          "| median size ratio | median regret | within the floor on test |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    base = {(r["dataset"], r["seed"]): r for r in searches if r["setting"] == "default"}
    for name in SETTINGS:
        own = [r for r in searches if r["setting"] == name]
        pairs = [
            (r, base[(r["dataset"], r["seed"])]) for r in own if (r["dataset"], r["seed"]) in base
        ]
        wall = _median([r["seconds"] / b["seconds"] for r, b in pairs])
        epochs = _median([r["epochs"] / max(b["epochs"], 1) for r, b in pairs])
        smaller = sum(r["size_ratio"] <= b["size_ratio"] + 1e-12 for r, b in pairs)
        print(
            f"| {name} | {wall:.2f} | {epochs:.2f} | {smaller} of {len(pairs)} "
            f"| {_median([r['size_ratio'] for r in own]):.4f} "
            f"| {_median([r['regret'] for r in own]):.2f} "
            f"| {sum(bool(r['within']) for r in own)} of {len(own)} |"
        )
    if matched:
        print("\n## Matched widths: paired 95% validation interval against the baseline\n")
        print("| table | seed | widths | scratch delta (+/-) | distill delta (+/-) | narrower |")
        print("|---|---|---|---|---|---|")
        for m in matched:
            print(
                f"| {Path(m['dataset'].split(':')[0]).stem} | {m['seed']} | {m['hidden']} "
                f"| {m['scratch_delta']:+.4f} ({m['scratch_half']:.4f}) "
                f"| {m['distill_delta']:+.4f} ({m['distill_half']:.4f}) "
                f"| {'yes' if m['distill_half'] < m['scratch_half'] else 'no'} |"
            )
        narrower = sum(m["distill_half"] < m["scratch_half"] for m in matched)
        ratio = _median(
            [m["distill_half"] / m["scratch_half"] for m in matched if m["scratch_half"]]
        )
        print(
            f"\nDistill narrower in {narrower} of {len(matched)}; "
            f"median half-width ratio {ratio:.3f}."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,breast_cancer")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--no-matched", action="store_true", help="skip the matched widths")
    parser.add_argument("--no-search", action="store_true", help="skip the searches")
    # E.g. "0.3:2,0.7:2,1:2,0.7:1,0.7:4": distillation (weight:temperature) at one shape.
    parser.add_argument("--distill-grid", default="")
    parser.add_argument("--grid-multiplier", type=float, default=0.125)
    parser.add_argument("--json", metavar="PATH", help="append one JSON object per row to PATH")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    searches: list[dict[str, Any]] = []
    matched: list[dict[str, Any]] = []
    grid: list[dict[str, Any]] = []
    combos = [
        (float(w), float(t)) for w, t in (c.split(":") for c in args.distill_grid.split(",") if c)
    ]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for dataset in args.datasets.split(","):
            plain = _config(dataset, root, None)
            set_training_threads(plain)
            for seed in seeds:
                if combos:
                    for row in _grid(plain, dataset, seed, combos, args.grid_multiplier):
                        grid.append(row)
                        print(json.dumps(row), flush=True)
                        if args.json:
                            with open(args.json, "a") as out:
                                out.write(json.dumps({"kind": "grid", **row}) + "\n")
                for name in args.settings.split(",") if not args.no_search else []:
                    config = override(plain, "bench", **SETTINGS[name]) if SETTINGS[name] else plain
                    row = _search(config, name, dataset, seed, args.trials, root / "s")
                    searches.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        with open(args.json, "a") as out:
                            out.write(json.dumps({"kind": "search", **row}) + "\n")
                if not args.no_matched:
                    for row in _matched(plain, dataset, seed, root / "m"):
                        matched.append(row)
                        print(json.dumps(row), flush=True)
                        if args.json:
                            with open(args.json, "a") as out:
                                out.write(json.dumps({"kind": "matched", **row}) + "\n")
    if searches or matched:
        _report(searches, matched)
    if grid:
        _grid_report(grid)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
