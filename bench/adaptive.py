"""The adaptive prune schedule against fixed keep ratios at matched size, and the seed's claim.

Gurbych and Prymachenko (2022) claim their accept/rollback loop finds by itself how much to
remove, and removed up to 87-90% of the weights while the held-out error improved. Here, per
bundled dataset, the product's default baseline (from `bench/approaches.py`) is pruned by:

- `adaptive`: `apply_plan` with schedule "adaptive" (the loop on the validation split, BatchNorm
  statistics re-estimated per step), from a first step of half the neurons, then a final
  fine-tuning of `--epochs`;
- `fixed`: one uniform keep ratio for every layer, chosen so that the parameter count matches
  the adaptive network's as closely as the rounding allows, one-shot, same criterion, same
  final fine-tuning;
- `scratch`: the adaptive network's widths trained from scratch (Klemetti et al.'s approach 1).

Figures: share of weights removed, the validation error the loop minimises (log loss) before
and after, and the test accuracy of each, mean over fine-tuning seeds with min..max. An
accuracy difference of a row or two (0.37 points on digits, 1.2 on breast_cancer) is noise.

Run: `.venv/bin/python bench/adaptive.py [--datasets digits,breast_cancer] [--seeds 0,1,2]
[--criteria target_perturbation,bn_scale] [--epochs 2]`. It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from approaches import FULL, _config, _markdown, train_baseline  # noqa: E402

from lightning_modules.evaluation import evaluate_network  # noqa: E402
from lightning_modules.networks import MLP, build, count_parameters  # noqa: E402
from lightning_modules.training import fit, quiet_lightning  # noqa: E402
from pruning.choices import kept_count  # noqa: E402
from pruning.plan import PruningPlan, apply_plan  # noqa: E402
from pruning.reductive import validation_error  # noqa: E402


def _matched_keep(network: MLP, target_parameters: int) -> float:
    """The uniform keep ratio whose pruned parameter count is closest to `target_parameters`."""
    widths = network.spec.hidden

    def parameters(keep: float) -> int:
        hidden = tuple(max(1, kept_count(keep, w)) for w in widths)
        return count_parameters(build(network.spec.with_hidden(hidden)))

    candidates = [k / 200 for k in range(1, 201)]
    return min(candidates, key=lambda keep: abs(parameters(keep) - target_parameters))


def _fmt(values: list[float], spec: str = ".4f") -> str:
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    return f"{statistics.fmean(values):{spec}} ({min(values):{spec}}..{max(values):{spec}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,breast_cancer,synthetic_classification")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--criteria", default="target_perturbation,bn_scale")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    rows = []
    for dataset in args.datasets.split(","):
        baseline = train_baseline(dataset, FULL)
        data, network = baseline.data, baseline.network
        base_params = count_parameters(network)
        base_error = validation_error(evaluate_network(network, data, "val"), data.task)
        for criterion in args.criteria.split(","):
            removed, errors, widths, steps = [], [], [], []
            tests: dict[str, list[float]] = {"adaptive": [], "fixed": [], "scratch": []}
            for seed in seeds:
                settings = _config(FULL, seed)
                n_layers = len(network.spec.hidden)
                plan = PruningPlan(
                    keep_ratios=(0.5,) * n_layers, order=tuple(range(n_layers)),
                    criterion=criterion, schedule="adaptive", fine_tune_epochs=args.epochs,
                )  # fmt: skip
                adaptive = apply_plan(network, plan, data=data, fit_settings=settings, seed=seed)
                pruned = adaptive.network
                parameters = count_parameters(pruned)
                removed.append(1 - parameters / base_params)
                errors.append(validation_error(adaptive.val_metrics, data.task))
                widths.append("-".join(map(str, pruned.spec.hidden)))
                details = adaptive.details
                steps.append(f"{details['steps_accepted']}/{details['steps_rolled_back']}")
                tests["adaptive"].append(evaluate_network(pruned, data, "test")[baseline.metric])
                keep = _matched_keep(network, parameters)
                fixed_plan = PruningPlan(
                    keep_ratios=(keep,) * n_layers, order=tuple(range(n_layers)),
                    criterion=criterion, schedule="one_shot", fine_tune_epochs=args.epochs,
                )  # fmt: skip
                fixed = apply_plan(network, fixed_plan, data=data, fit_settings=settings, seed=seed)
                fixed_test = evaluate_network(fixed.network, data, "test")[baseline.metric]
                tests["fixed"].append(fixed_test)
                twin = fit(build(pruned.spec, seed=seed), data, settings)
                tests["scratch"].append(twin.test_metrics[baseline.metric])
            rows.append(
                [
                    dataset, criterion, f"{baseline.test:.4f}", f"{base_error:.4f}",
                    " / ".join(sorted(set(widths))), _fmt(removed, ".3f"), _fmt(errors),
                    " ".join(steps), _fmt(tests["adaptive"]), _fmt(tests["fixed"]),
                    _fmt(tests["scratch"]),
                ]
            )  # fmt: skip
            print(f"  {dataset} {criterion}: {time.perf_counter() - started:.0f} s", flush=True)
    print(
        _markdown(
            [
                "dataset",
                "criterion",
                "baseline test metric",
                "baseline val error",
                "adaptive widths",
                "weights removed",
                "val error after",
                "steps accepted/rolled back per seed",
                "adaptive test",
                "fixed keep, same size, test",
                "scratch, same widths, test",
            ],
            rows,
        )  # fmt: skip
    )
    print(f"\n{time.perf_counter() - started:.0f} s in all; final fine-tuning {args.epochs} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
