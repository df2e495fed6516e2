"""The ways to shrink a trained tabular network, and the pruning criteria, in one run.

Sections, each printed as a Markdown table (ready for bench/RESULTS.md):

1. Baselines: the product's default MLP (256, 256, 128), trained once per dataset (seed 0).
2. Matched widths (Klemetti et al. 2024): every hidden layer keeps the same share of its
   neurons. Approach 2 prunes the baseline by one criterion (`--criterion`, default l1) and
   fine-tunes 2 epochs (`Settings.prune_epochs`), and also as many epochs as scratch training
   may run; approach 1 trains the same widths from scratch with the baseline's training
   settings. Both sides have exactly the same parameter count, and both are the mean
   over the same seeds (fine-tuning seeds and scratch seeds: dropout, and the initial weights
   from scratch). A third side, `distill`, trains the same widths from scratch against the
   baseline's outputs (`search.distill`'s default weight and temperature).
3. Recovery curve: the same pruned network fine-tuned 0, 1, 2, 4, 8 epochs, each budget
   starting again from the pruned network. `pruning.fine_tune` keeps the best validation-loss
   epoch within the budget, so validation accuracy is slightly favoured; the test accuracy is
   reported beside it and is not. A small table beside it puts the product's 0-epoch network
   (BatchNorm statistics re-estimated) next to the same `apply_plan` with its re-estimation
   switched off (statistics of the unpruned network), to show what the re-estimation is worth.
4. Criteria against the random control at equal keep ratios, with 0 and 1 fine-tuning epochs;
   random is the mean over several seeds, and its min..max shows what chance alone does.
5. Layer order (Anik et al. 2024), if the `pruning.sensitivity` scan is available: the same
   uniform keep ratio pruned in order (0, 1, 2), (2, 1, 0) and least/most-sensitive-first,
   one-shot and iterative (one fine-tuning epoch after each layer), then one final epoch.

Every pruned network comes from the product's code: `apply_plan` (which re-estimates the
BatchNorm running statistics on the training rows with `recalibrate_batch_norm` after each
layer's removal, so later layers are scored, and the result evaluated, with current statistics)
and, for the layer order, `pruning.sensitivity.scan` (which does the same after its removal).

Validation splits are small (85 rows for breast_cancer, 270 for digits, 300 for the synthetic
table), so one row moves accuracy by 1.2, 0.37 and 0.33 points; read differences below a few
rows as noise.

Run: `.venv/bin/python bench/approaches.py [--quick] [--threads N] [--criterion C]`.
It prints; it does not assert anything about the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from unittest import mock

import torch
from torch import nn

import pruning.plan
from lightning_modules.data import TabularDataModule
from lightning_modules.distillation import Distillation, teacher_outputs
from lightning_modules.evaluation import evaluate_network
from lightning_modules.metrics import HIGHER_IS_BETTER  # noqa: E402
from lightning_modules.networks import MLP, MLPSpec, build, count_parameters
from lightning_modules.training import FitSettings, fit, quiet_lightning  # noqa: E402
from pruning.criteria import CRITERIA, layer_scores
from pruning.fine_tune import fine_tune
from pruning.plan import PruningPlan, apply_plan
from search.config.sections import DistillConfig

# The product's default baseline and training settings (configs/default.yaml).
HIDDEN = (256, 256, 128)
BATCH_SIZE = 128
LR = 0.002
WEIGHT_DECAY = 1e-4
PATIENCE = 8


@dataclass(frozen=True)
class Settings:
    """What one run covers.

    Args:
        keep_ratios: uniform keep ratios of the matched-width and recovery sections.
        seeds: scratch-training seeds, and the fine-tuning seeds of the pruned side.
        random_seeds: seeds of the random control, averaged.
        order_ratio: keep ratio of the layer-order section; None skips it.
    """

    datasets: tuple[str, ...]
    max_epochs: int
    keep_ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    prune_epochs: int
    recovery_epochs: tuple[int, ...]
    criteria: tuple[str, ...]
    criteria_ratios: tuple[float, ...]
    random_seeds: tuple[int, ...]
    order_ratio: float | None


_ALL_CRITERIA = tuple(c for c in CRITERIA if c != "random")

FULL = Settings(
    datasets=("digits", "breast_cancer", "synthetic_classification"),
    max_epochs=40,
    keep_ratios=(0.5, 0.25, 0.1),
    seeds=(0, 1, 2),
    prune_epochs=2,
    recovery_epochs=(0, 1, 2, 4, 8),
    criteria=_ALL_CRITERIA,
    criteria_ratios=(0.5, 0.25, 0.1),
    random_seeds=(0, 1, 2),
    order_ratio=0.25,
)
QUICK = Settings(
    datasets=("digits", "breast_cancer"),
    max_epochs=15,
    keep_ratios=(0.25,),
    seeds=(0,),
    prune_epochs=2,
    recovery_epochs=(0, 1, 2),
    criteria=("l1", "taylor"),
    criteria_ratios=(0.25,),
    random_seeds=(0, 1),
    order_ratio=None,
)


@dataclass
class Baseline:
    dataset: str
    data: TabularDataModule
    spec: MLPSpec
    network: MLP
    metric: str
    val: float
    test: float
    epochs: int
    best_epoch: int


# --- small helpers -----------------------------------------------------------------------------


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; numbers are expected already formatted."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join(lines)


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def _fmt(values: Sequence[float]) -> str:
    """Mean, with the range when there are several values: 0.9630 (0.959..0.967)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{_mean(values):.4f} ({min(values):.3f}..{max(values):.3f})"


def _widths(network: MLP) -> str:
    return "-".join(map(str, network.spec.hidden))


def _config(settings: Settings, seed: int) -> FitSettings:
    return FitSettings(
        max_epochs=settings.max_epochs,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        patience=PATIENCE,
        seed=seed,
        accelerator="cpu",
    )


def _score(network: MLP, data: TabularDataModule, split: str) -> float:
    return evaluate_network(network, data, split)[data.task.metric]


def _prune(
    baseline: Baseline, keep: float, criterion: str, config: FitSettings, *, seed: int = 0,
    order: tuple[int, ...] | None = None, schedule: str = "one_shot", fine_tune_epochs: int = 0,
) -> MLP:  # fmt: skip
    """The baseline pruned to `keep` of every hidden layer by `apply_plan`."""
    n_layers = len(baseline.spec.hidden)
    plan = PruningPlan(
        keep_ratios=(keep,) * n_layers,
        order=order if order is not None else tuple(range(n_layers)),
        criterion=criterion,
        schedule=schedule,
        fine_tune_epochs=fine_tune_epochs,
    )
    return apply_plan(
        baseline.network, plan, data=baseline.data, fit_settings=config, seed=seed
    ).network


def _prune_stale(baseline: Baseline, keep: float, criterion: str, config: FitSettings) -> MLP:
    """`_prune` with the BatchNorm re-estimation inside `apply_plan` switched off.

    Not a product path: every kept neuron keeps the running statistics of the unpruned network,
    as `apply_plan` did before it called `recalibrate_batch_norm` after each removal. Only for
    the table that shows what the re-estimation is worth.
    """

    def stale(network: nn.Module, data: TabularDataModule) -> None:
        del network, data  # leave the statistics as they are

    with mock.patch.object(pruning.plan, "recalibrate_batch_norm", stale):
        return _prune(baseline, keep, criterion, config)


def _same_weights(a: MLP, b: MLP) -> bool:
    """Same widths and parameters (BatchNorm running statistics are buffers, not compared)."""
    if a.spec.hidden != b.spec.hidden:
        return False
    b_parameters = dict(b.named_parameters())
    return all(torch.equal(value, b_parameters[name]) for name, value in a.named_parameters())


def _show(title: str, body: str) -> None:
    print(f"\n### {title}\n\n{body}", flush=True)


def _timed(label: str, started: float) -> None:
    print(f"  ... {label} ({time.perf_counter() - started:.0f} s so far)", flush=True)


# --- sections ----------------------------------------------------------------------------------


def train_baseline(dataset: str, settings: Settings) -> Baseline:
    data = TabularDataModule.from_bundled(dataset, batch_size=BATCH_SIZE, seed=0)
    spec = MLPSpec(hidden=HIDDEN, **data.network_inputs())
    result = fit(build(spec, seed=0), data, _config(settings, 0))
    assert isinstance(result.network, MLP)
    metric = data.task.metric
    return Baseline(
        dataset=dataset,
        data=data,
        spec=spec,
        network=result.network,
        metric=metric,
        val=result.val_metrics[metric],
        test=result.test_metrics[metric],
        epochs=result.epochs,
        best_epoch=result.best_epoch,
    )


def baseline_table(baselines: list[Baseline]) -> str:
    rows = []
    for b in baselines:
        sizes = "/".join(str(len(b.data.tensors[s]["y"])) for s in ("train", "val", "test"))
        rows.append(
            [
                b.dataset, b.data.task, sizes, _widths(b.network),
                count_parameters(b.network), f"{b.epochs} ({b.best_epoch})",
                f"{b.val:.4f}", f"{b.test:.4f}",
            ]
        )  # fmt: skip
    return _markdown(
        ["dataset", "task", "rows train/val/test", "hidden", "params", "epochs (best)",
         "val metric", "test metric"],
        rows,
    )  # fmt: skip


@dataclass
class Pruned:
    """One pruned network and its val/test metric per (fine-tuning epochs, seed)."""

    keep: float
    network: MLP
    val: dict[int, list[float]]
    test: dict[int, list[float]]
    stale_val: float
    stale_test: float
    same_neurons: bool


def prune_and_recover(baseline: Baseline, settings: Settings, criterion: str) -> list[Pruned]:
    """For each keep ratio: prune once, then fine-tune each budget with each seed."""
    budgets = sorted({*settings.recovery_epochs, settings.prune_epochs})
    results = []
    for keep in settings.keep_ratios:
        pruned = _prune(baseline, keep, criterion, _config(settings, 0))
        val: dict[int, list[float]] = {e: [] for e in budgets}
        test: dict[int, list[float]] = {e: [] for e in budgets}
        for epochs in budgets:
            # With 0 epochs nothing is random: one evaluation stands for every seed.
            for seed in settings.seeds if epochs > 0 else settings.seeds[:1]:
                tuned, metrics = fine_tune(pruned, baseline.data, epochs, _config(settings, seed))
                val[epochs].append(metrics[baseline.metric])
                test[epochs].append(_score(tuned, baseline.data, "test"))
        stale = _prune_stale(baseline, keep, criterion, _config(settings, 0))
        results.append(
            Pruned(
                keep=keep,
                network=pruned,
                val=val,
                test=test,
                stale_val=_score(stale, baseline.data, "val"),
                stale_test=_score(stale, baseline.data, "test"),
                same_neurons=_same_weights(stale, pruned),
            )
        )
    return results


def scratch(
    baseline: Baseline, hidden: tuple[int, ...], settings: Settings
) -> tuple[list[float], list[float], int]:
    """Val and test metric per seed of `hidden` trained from scratch, and its parameters."""
    vals, tests, params = [], [], 0
    for seed in settings.seeds:
        result = fit(
            build(baseline.spec.with_hidden(hidden), seed=seed),
            baseline.data,
            _config(settings, seed),
        )
        vals.append(result.val_metrics[baseline.metric])
        tests.append(result.test_metrics[baseline.metric])
        params = count_parameters(result.network)
    return vals, tests, params


def distilled(
    baseline: Baseline, hidden: tuple[int, ...], settings: Settings
) -> tuple[list[float], list[float]]:
    """Val and test metric per seed of `hidden` distilled from the baseline (the third
    approach, `search.distill`'s default weight and temperature), trained like `scratch`."""
    given = DistillConfig()
    teacher = teacher_outputs(baseline.network, baseline.data)
    vals, tests = [], []
    for seed in settings.seeds:
        config = dataclasses.replace(
            _config(settings, seed), distill=Distillation(given.weight, given.temperature)
        )
        result = fit(
            build(baseline.spec.with_hidden(hidden), seed=seed),
            baseline.data,
            config,
            teacher=teacher,
        )
        vals.append(result.val_metrics[baseline.metric])
        tests.append(result.test_metrics[baseline.metric])
    return vals, tests


def matched_rows(
    baseline: Baseline, pruned: list[Pruned], settings: Settings
) -> list[list[object]]:
    base_params = count_parameters(baseline.network)
    rows: list[list[object]] = []
    sign = 1.0 if HIGHER_IS_BETTER[baseline.metric] else -1.0
    for p in pruned:
        s_val, s_test, params = scratch(baseline, p.network.spec.hidden, settings)
        assert params == count_parameters(p.network), "same widths, same parameters"
        d_val, d_test = distilled(baseline, p.network.spec.hidden, settings)
        e = settings.prune_epochs
        # The pruned network fine-tuned for as many epochs as scratch training may run.
        long_val, long_test = [], []
        for seed in settings.seeds:
            tuned, metrics = fine_tune(
                p.network, baseline.data, settings.max_epochs, _config(settings, seed)
            )
            long_val.append(metrics[baseline.metric])
            long_test.append(_score(tuned, baseline.data, "test"))
        rows.append(
            [
                baseline.dataset, f"{p.keep:g}", _widths(p.network), params,
                f"{params / base_params:.3f}", _fmt(p.val[e]), _fmt(p.test[e]),
                _fmt(s_val), _fmt(s_test),
                f"{sign * (_mean(s_val) - _mean(p.val[e])):+.4f}",
                f"{sign * (_mean(s_test) - _mean(p.test[e])):+.4f}",
                _fmt(long_val), _fmt(long_test),
                f"{sign * (_mean(s_test) - _mean(long_test)):+.4f}",
                _fmt(d_val), _fmt(d_test),
                f"{sign * (_mean(d_test) - _mean(s_test)):+.4f}",
            ]
        )  # fmt: skip
    return rows


def recovery_rows(
    baseline: Baseline, pruned: list[Pruned], settings: Settings, split: str
) -> list[list[object]]:
    rows: list[list[object]] = []
    for p in pruned:
        values = p.val if split == "val" else p.test
        base = baseline.val if split == "val" else baseline.test
        row: list[object] = [baseline.dataset, f"{p.keep:g}", _widths(p.network), f"{base:.4f}"]
        rows.append(row + [f"{_mean(values[e]):.4f}" for e in settings.recovery_epochs])
    return rows


def statistics_rows(baseline: Baseline, pruned: list[Pruned]) -> list[list[object]]:
    """Right after pruning (0 epochs): stale BatchNorm statistics against re-estimated ones."""
    return [
        [
            baseline.dataset,
            f"{p.keep:g}",
            _widths(p.network),
            "yes" if p.same_neurons else "no",
            f"{baseline.val:.4f}",
            f"{p.stale_val:.4f}",
            f"{p.val[0][0]:.4f}",
            f"{baseline.test:.4f}",
            f"{p.stale_test:.4f}",
            f"{p.test[0][0]:.4f}",
        ]
        for p in pruned
    ]


def target_perturbation_works(baseline: Baseline, settings: Settings) -> str | None:
    """None if `layer_scores(..., "target_perturbation", ...)` runs here, else why not."""
    try:
        scores = layer_scores(
            baseline.network,
            "target_perturbation",
            data=baseline.data,
            fit_settings=_config(settings, 0),
        )
    except Exception as error:  # any failure means: leave the criterion out and say so
        return f"{type(error).__name__}: {error}"
    if [len(s) for s in scores] != list(baseline.spec.hidden):
        return f"scores of widths {[len(s) for s in scores]}, expected {list(baseline.spec.hidden)}"
    return None


def criteria_table(
    baseline: Baseline, settings: Settings, criteria: Sequence[str]
) -> tuple[str, dict[tuple[str, float, int], float]]:
    """Val metric per criterion, keep ratio and fine-tuning budget (0 and 1 epochs).

    Returns the table and, per (criterion, keep, epochs), the difference to the random mean
    (positive = better than random).
    """
    config = _config(settings, 0)
    sign = 1.0 if HIGHER_IS_BETTER[baseline.metric] else -1.0

    def run(criterion: str, keep: float, seed: int) -> tuple[float, float]:
        pruned = _prune(baseline, keep, criterion, config, seed=seed)
        at0 = _score(pruned, baseline.data, "val")
        _, metrics = fine_tune(pruned, baseline.data, 1, config)
        return at0, metrics[baseline.metric]

    random_runs = {
        keep: [run("random", keep, seed) for seed in settings.random_seeds]
        for keep in settings.criteria_ratios
    }
    rows: list[list[object]] = []
    differences: dict[tuple[str, float, int], float] = {}
    row: list[object] = ["random (mean, min..max)"]
    for keep in settings.criteria_ratios:
        row += [_fmt([r[i] for r in random_runs[keep]]) for i in (0, 1)]
    rows.append(row)
    for criterion in criteria:
        row = [criterion]
        for keep in settings.criteria_ratios:
            values = run(criterion, keep, 0)
            for i, value in enumerate(values):
                random_mean = _mean([r[i] for r in random_runs[keep]])
                differences[(criterion, keep, i)] = sign * (value - random_mean)
                row.append(f"{value:.4f} ({sign * (value - random_mean):+.3f})")
        rows.append(row)
    headers = ["criterion"] + [
        f"keep {keep:g}, {e} ep" for keep in settings.criteria_ratios for e in (0, 1)
    ]
    return _markdown(headers, rows), differences


def criteria_summary(
    differences: dict[str, dict[tuple[str, float, int], float]], criteria: Sequence[str]
) -> str:
    """Per criterion and budget: mean difference to random over datasets and ratios, and wins."""
    rows: list[list[object]] = []
    for criterion in criteria:
        row: list[object] = [criterion]
        for epochs in (0, 1):
            diffs = [
                d
                for per_dataset in differences.values()
                for (c, _, e), d in per_dataset.items()
                if c == criterion and e == epochs
            ]
            wins = sum(d > 0 for d in diffs)
            ties = sum(d == 0 for d in diffs)
            row += [f"{_mean(diffs):+.4f}", f"{wins}/{ties}/{len(diffs) - wins - ties}"]
        rows.append(row)
    return _markdown(
        ["criterion", "0 ep: mean diff", "0 ep: better/tie/worse",
         "1 ep: mean diff", "1 ep: better/tie/worse"],
        rows,
    )  # fmt: skip


def order_section(
    baseline: Baseline, settings: Settings, criterion: str, keep: float
) -> tuple[str, str] | None:
    """The layer-order table and the sensitivity scan it used, or None without the scan."""
    try:
        from pruning.sensitivity import scan
    except ImportError as error:
        print(f"  layer order skipped: pruning.sensitivity not importable ({error})")
        return None
    sensitivity = scan(
        baseline.network,
        baseline.data,
        ratios=(1.0 - keep,),
        criterion=criterion,
        fine_tune_epochs=(0, 1),
        fit_settings=_config(settings, 0),
    )
    n_layers = len(baseline.spec.hidden)
    named = [
        ("first to last", tuple(range(n_layers))),
        ("last to first", tuple(reversed(range(n_layers)))),
        ("least sensitive first", tuple(sensitivity.order)),
        ("most sensitive first", tuple(reversed(sensitivity.order))),
    ]
    # One row per distinct order, named by every label that gives it.
    orders: dict[str, tuple[int, ...]] = {}
    for order in dict.fromkeys(order for _, order in named):
        orders[" = ".join(name for name, o in named if o == order)] = order
    rows: list[list[object]] = []
    for schedule in ("one_shot", "iterative"):
        for name, order in orders.items():
            vals, tests = [], []
            for seed in settings.seeds:
                pruned = _prune(
                    baseline, keep, criterion, _config(settings, seed), seed=seed, order=order,
                    schedule=schedule, fine_tune_epochs=1,
                )  # fmt: skip
                vals.append(_score(pruned, baseline.data, "val"))
                tests.append(_score(pruned, baseline.data, "test"))
            rows.append([baseline.dataset, schedule, f"{name} {order}", _fmt(vals), _fmt(tests)])
    table = _markdown(["dataset", "schedule", "order", "val metric", "test metric"], rows)
    return table, sensitivity.format_table()


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="two datasets, one ratio, few epochs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--criterion", default="l1", help="criterion of the matched-width and order sections"
    )
    parser.add_argument("--datasets", nargs="+", help="override the datasets")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.datasets:
        settings = dataclasses.replace(settings, datasets=tuple(args.datasets))
    torch.set_num_threads(args.threads)
    quiet_lightning()
    started = time.perf_counter()
    print(
        f"settings: {settings}\nbaseline hidden {HIDDEN}, batch {BATCH_SIZE}, lr {LR}, "
        f"weight decay {WEIGHT_DECAY}, patience {PATIENCE}; fine-tuning lr = 0.3 x lr; "
        f"matched-width criterion {args.criterion}; torch threads {args.threads}",
        flush=True,
    )

    baselines = [train_baseline(name, settings) for name in settings.datasets]
    _timed("baselines", started)

    criteria = list(settings.criteria)
    left_out: str | None = None
    if "target_perturbation" in criteria:
        left_out = target_perturbation_works(baselines[0], settings)
        if left_out is not None:
            criteria.remove("target_perturbation")

    matched: list[list[object]] = []
    recovery_val: list[list[object]] = []
    recovery_test: list[list[object]] = []
    stale_rows: list[list[object]] = []
    for baseline in baselines:
        pruned = prune_and_recover(baseline, settings, args.criterion)
        matched += matched_rows(baseline, pruned, settings)
        recovery_val += recovery_rows(baseline, pruned, settings, "val")
        recovery_test += recovery_rows(baseline, pruned, settings, "test")
        stale_rows += statistics_rows(baseline, pruned)
        _timed(f"matched widths and recovery: {baseline.dataset}", started)

    criteria_tables: dict[str, str] = {}
    differences: dict[str, dict[tuple[str, float, int], float]] = {}
    for baseline in baselines:
        table, diffs = criteria_table(baseline, settings, criteria)
        criteria_tables[baseline.dataset], differences[baseline.dataset] = table, diffs
        _timed(f"criteria: {baseline.dataset}", started)

    orders: dict[str, tuple[str, str]] = {}
    if settings.order_ratio is not None:
        for baseline in baselines:
            section = order_section(baseline, settings, args.criterion, settings.order_ratio)
            if section is None:
                break
            orders[baseline.dataset] = section
            _timed(f"layer order: {baseline.dataset}", started)

    _show("Baselines (metric: accuracy for classification)", baseline_table(baselines))
    seeds = len(settings.seeds)
    _show(
        f"Matched widths: prune ({args.criterion}, one-shot, uniform) + fine-tune "
        f"{settings.prune_epochs} epochs vs the same widths from scratch "
        f"(mean (min..max) over {seeds} seed{'s' * (seeds > 1)}; diff = scratch - prune, "
        f"positive = scratch better; ft{settings.max_epochs}: the pruned net fine-tuned as many "
        "epochs as scratch may train, best val-loss epoch kept)",
        _markdown(
            ["dataset", "keep", "widths", "params", "param ratio", "prune val", "prune test",
             "scratch val", "scratch test", "diff val", "diff test",
             f"prune ft{settings.max_epochs} val", f"prune ft{settings.max_epochs} test",
             f"diff test vs ft{settings.max_epochs}", "distill val", "distill test",
             "diff test (distill - scratch)"],
            matched,
        ),
    )  # fmt: skip
    epoch_headers = [f"{e} ep" for e in settings.recovery_epochs]
    for split, rows in (("validation", recovery_val), ("test", recovery_test)):
        _show(
            f"Recovery curve, {split} metric after N fine-tuning epochs "
            f"(mean over {seeds} seed{'s' * (seeds > 1)}; each budget from the same pruned net)",
            _markdown(["dataset", "keep", "widths", "baseline", *epoch_headers], rows),
        )
    _show(
        f"BatchNorm statistics right after pruning (0 fine-tuning epochs, {args.criterion}): "
        "stale = `apply_plan` with its re-estimation switched off (statistics of the unpruned "
        "network), re-estimated = `apply_plan` as the product runs it (the 0 ep column above)",
        _markdown(
            ["dataset", "keep", "widths", "same neurons", "baseline val", "stale val",
             "re-estimated val", "baseline test", "stale test", "re-estimated test"],
            stale_rows,
        ),
    )  # fmt: skip
    for dataset, table in criteria_tables.items():
        _show(
            f"Criteria vs random, {dataset}: val metric (difference to the random mean), "
            f"uniform keep ratio, one-shot, 0 or 1 fine-tuning epoch; random over seeds "
            f"{list(settings.random_seeds)}",
            table,
        )
    _show(
        "Criteria vs random, summary over datasets and keep ratios "
        "(mean val difference to random; positive = better)",
        criteria_summary(differences, criteria),
    )
    if left_out is not None:
        print(f"\ntarget_perturbation was left out: {left_out}")
    for dataset, (table, scan_table) in orders.items():
        _show(
            f"Layer order, {dataset}: keep {settings.order_ratio:g} of every layer, "
            f"{args.criterion}, 1 final fine-tuning epoch (iterative: also 1 after each layer)",
            table,
        )
        _show(f"Sensitivity scan used for the order, {dataset} ({args.criterion})", scan_table)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
