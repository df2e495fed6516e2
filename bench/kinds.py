"""The network kinds side by side: scratch against prune at matched widths per kind, the seed's
claim about the transformer's feed-forward block, and what the default search reaches per kind.

Sections, each printed as a Markdown table (ready for bench/RESULTS.md):

1. Matched widths per kind (Klemetti et al. 2024, `bench/approaches.py` for the MLP): every
   prunable group keeps the same share of its units. Approach 2 prunes the trained baseline
   (l1, one shot) and fine-tunes `PRUNE_EPOCHS`; approach 1 trains the same widths from
   scratch. Both sides have exactly the same parameter count; each is the mean over the seeds.
2. FT-Transformer at a matched parameter reduction (Klemetti et al. name its feed-forward block
   as the promising place): remove feed-forward units only, attention heads only, or token
   width only, each chosen to come closest to removing `FT_REDUCTION` of the parameters, then
   train that shape from scratch, or prune the baseline to it (l1) and fine-tune.
3. The default search per kind (`configs/<kind>.yaml`, `--trials` trials, the confident
   champion): its parameter and ONNX Runtime latency ratios to the baseline, and its test delta
   with the paired 95% interval.

The baselines of sections 1 and 2 are smaller than the example configs so that the whole run
fits a 2-core machine; section 3 uses the example configs as they stand (1.5M+ parameters).
Validation and test splits are small (85 rows for breast_cancer, 300 for the synthetic table):
one row moves accuracy by 1.2 and 0.33 points, so read differences of a few rows as noise.

Run: `.venv/bin/python bench/kinds.py [--quick] [--sections 1,2,3] [--trials N]`.
It prints; it does not assert anything about the results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from lightning_modules.data import TabularDataModule  # noqa: E402
from lightning_modules.evaluation import evaluate_network  # noqa: E402
from lightning_modules.networks import KINDS, build, count_parameters  # noqa: E402
from lightning_modules.training import FitSettings, fit, quiet_lightning  # noqa: E402
from pruning.plan import PruningPlan, apply_plan  # noqa: E402

DATASETS = ("breast_cancer", "synthetic_classification")
PRUNE_EPOCHS = 2
FT_REDUCTION = 0.2
# Section 1 and 2 baselines, and their learning rates (a transformer wants smaller steps).
MODELS: dict[str, tuple[dict[str, Any], float]] = {
    "mlp": ({"hidden": [256, 256, 128]}, 2e-3),
    "resnet": ({"d_main": 256, "hidden": [512, 512]}, 2e-3),
    "ft_transformer": ({"d_token": 96, "n_blocks": 3, "n_heads": 8, "ffn_hidden": 256}, 3e-4),
    "cnn1d": ({"dense": 2048, "length": 16, "skip": [256], "middle": [256]}, 1e-3),
}
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings(lr: float, seed: int, max_epochs: int) -> FitSettings:
    return FitSettings(
        max_epochs=max_epochs, lr=lr, weight_decay=1e-4, patience=8, seed=seed, accelerator="cpu"
    )


def _test(network: Any, data: TabularDataModule) -> float:
    return evaluate_network(network, data, "test")[data.task.metric]


def _baseline(kind: str, data: TabularDataModule, max_epochs: int) -> tuple[Any, float, float]:
    options, lr = MODELS[kind]
    family = KINDS[kind]
    spec = family.baseline(family.options(**options), **data.network_inputs())
    result = fit(build(spec, seed=0), data, _settings(lr, 0, max_epochs))
    return result.network, _test(result.network, data), lr


def _scratch(
    spec: Any, data: TabularDataModule, lr: float, seeds: Sequence[int], epochs: int
) -> float:
    scores = []
    for seed in seeds:
        result = fit(build(spec, seed=seed), data, _settings(lr, seed, epochs))
        scores.append(_test(result.network, data))
    return statistics.mean(scores)


def _pruned(
    baseline: Any, sizes: Sequence[int], data: TabularDataModule, lr: float,
    seeds: Sequence[int], epochs: int,
) -> tuple[float, Any]:  # fmt: skip
    """Mean test metric of the baseline pruned to `sizes` (l1, one shot) and fine-tuned."""
    widths = baseline.spec.group_sizes()
    plan = PruningPlan(
        keep_ratios=tuple(s / w for s, w in zip(sizes, widths, strict=True)),
        order=tuple(range(len(widths))),
        criterion="l1",
        fine_tune_epochs=PRUNE_EPOCHS,
    )
    scores, network = [], None
    for seed in seeds:
        result = apply_plan(
            baseline, plan, data=data, fit_settings=_settings(lr, seed, epochs), seed=seed
        )
        network = result.network
        scores.append(_test(network, data))
    assert network is not None and tuple(network.spec.group_sizes()) == tuple(sizes)
    return statistics.mean(scores), network


def matched_widths(datasets: Sequence[str], keeps: Sequence[float], seeds: Sequence[int],
                   epochs: int) -> str:  # fmt: skip
    rows = []
    for dataset in datasets:
        data = TabularDataModule.from_bundled(dataset, batch_size=128, seed=0)
        for kind in MODELS:
            started = time.perf_counter()
            baseline, base_test, lr = _baseline(kind, data, epochs)
            params = count_parameters(baseline)
            for keep in keeps:
                sizes = [max(1, round(keep * w)) for w in baseline.spec.group_sizes()]
                pruned, network = _pruned(baseline, sizes, data, lr, seeds, epochs)
                scratch = _scratch(network.spec, data, lr, seeds, epochs)
                rows.append([
                    dataset, kind, f"{params:,}", keep, f"{count_parameters(network) / params:.3f}",
                    f"{base_test:.4f}", f"{scratch - base_test:+.4f}", f"{pruned - base_test:+.4f}",
                    f"{scratch - pruned:+.4f}",
                ])  # fmt: skip
            print(f"  ... {dataset} {kind} ({time.perf_counter() - started:.0f} s)", flush=True)
    headers = ["dataset", "kind", "baseline params", "keep", "param ratio", "baseline test",
               "scratch delta", f"prune+{PRUNE_EPOCHS}ep delta", "scratch - prune"]  # fmt: skip
    return _markdown(headers, rows)


def _closest_sizes(baseline: Any, which: str, reduction: float) -> list[int]:
    """Group sizes that remove about `reduction` of the parameters from `which` groups only.

    The same share of every block's groups named `which` (heads, ffn or token) is kept; the
    share is the one whose parameter count comes closest to the target.
    """
    spec = baseline.spec
    target = (1 - reduction) * count_parameters(baseline)
    names, widths = spec.group_names(), spec.group_sizes()
    best: tuple[float, list[int]] | None = None
    for step in range(1, 101):
        share = step / 100
        sizes = [max(1, round(share * w)) if n.endswith(which) else w
                 for n, w in zip(names, widths, strict=True)]  # fmt: skip
        gap = abs(KINDS[spec.kind].closed_form_parameters(spec.with_group_sizes(sizes)) - target)
        if best is None or gap < best[0]:
            best = (gap, sizes)
    assert best is not None
    return best[1]


def transformer_groups(datasets: Sequence[str], seeds: Sequence[int], epochs: int) -> str:
    rows = []
    for dataset in datasets:
        data = TabularDataModule.from_bundled(dataset, batch_size=128, seed=0)
        started = time.perf_counter()
        baseline, base_test, lr = _baseline("ft_transformer", data, epochs)
        params = count_parameters(baseline)
        for which in ("ffn", "heads", "token"):
            sizes = _closest_sizes(baseline, which, FT_REDUCTION)
            pruned, network = _pruned(baseline, sizes, data, lr, seeds, epochs)
            scratch = _scratch(network.spec, data, lr, seeds, epochs)
            rows.append([
                dataset, which, "-".join(map(str, sizes)),
                f"{1 - count_parameters(network) / params:.3f}", f"{base_test:.4f}",
                f"{scratch - base_test:+.4f}", f"{pruned - base_test:+.4f}",
            ])  # fmt: skip
        print(f"  ... {dataset} ft_transformer groups ({time.perf_counter() - started:.0f} s)")
    headers = ["dataset", "removed from", "group sizes", "params removed", "baseline test",
               "scratch delta", f"prune+{PRUNE_EPOCHS}ep delta"]  # fmt: skip
    return _markdown(headers, rows)


def default_search(datasets: Sequence[str], trials: int) -> str:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from search.commands import run_search
    from search.config import load_config, override
    from search.front import pareto

    rows = []
    for dataset in datasets:
        for kind in ("mlp", "resnet", "ft_transformer", "cnn1d"):
            path = CONFIGS / ("default.yaml" if kind == "mlp" else f"{kind}.yaml")
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                config = override(
                    load_config(path), "bench", **{
                        "data.dataset": dataset, "search.n_trials": trials,
                        "search.study": f"{kind}-{dataset}", "search.storage": f"{tmp}/o.journal",
                        "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
                    },
                )  # fmt: skip
                run_search(config, progress=False)
                study = optuna.load_study(study_name=f"{kind}-{dataset}", storage=JournalStorage(
                    JournalFileBackend(f"{tmp}/o.journal")))  # fmt: skip
                seconds = time.perf_counter() - started
                baseline = next(t for t in study.trials if t.user_attrs.get("baseline"))
                champion = pareto.recommend(study) or baseline
                rows.append(_search_row(dataset, kind, baseline, champion, trials, seconds))
            print(f"  ... {dataset} {kind} search ({seconds:.0f} s)", flush=True)
    headers = ["dataset", "kind", "baseline params", "champion widths", "param ratio",
               "latency ratio", "test delta [95% CI]", "trials", "seconds"]  # fmt: skip
    return _markdown(headers, rows)


def _search_row(dataset: str, kind: str, baseline: Any, champion: Any, trials: int,
                seconds: float) -> list[object]:  # fmt: skip
    base, best = baseline.user_attrs["metrics"], champion.user_attrs["metrics"]
    latency = next(k for k in base if k.startswith("latency_onnxruntime") and k.endswith("_ms"))
    ratio = best[latency] / base[latency]
    delta = best.get("test_delta", 0.0)  # the baseline has no delta to itself
    low, high = best.get("test_delta_ci_low", 0.0), best.get("test_delta_ci_high", 0.0)
    return [dataset, kind, f"{int(base['parameters']):,}",
            "-".join(map(str, champion.user_attrs["hidden"])),
            f"{best['parameters'] / base['parameters']:.3f}", f"{ratio:.3f}",
            f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]", trials, f"{seconds:.0f}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one dataset, one seed, few epochs")
    parser.add_argument("--sections", default="1,2,3", help="which sections (default 1,2,3)")
    parser.add_argument("--trials", type=int, default=16, help="trials per search (section 3)")
    args = parser.parse_args(argv)
    quiet_lightning()
    datasets = DATASETS[:1] if args.quick else DATASETS
    seeds = (0,) if args.quick else (0, 1)
    epochs = 5 if args.quick else 20
    sections = {int(s) for s in args.sections.split(",")}
    if 1 in sections:
        print(
            "\n### Matched widths per kind\n\n"
            + matched_widths(datasets, (0.5, 0.25), seeds, epochs)
        )
    if 2 in sections:
        title = f"FT-Transformer: {FT_REDUCTION:.0%} of the parameters removed from one group kind"
        print(f"\n### {title}\n\n" + transformer_groups(datasets, seeds, epochs))
    if 3 in sections:
        print("\n### The default search per kind\n\n" + default_search(datasets, args.trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
