"""Epoch time of the Lightning training path against a bare PyTorch loop, in one run.

Both sides train the same network (same `MLPSpec`, same initial weights) on the same train
batches (`TabularDataModule.train_dataloader()`, the same seeded shuffles), with the same loss,
AdamW and cosine schedule, under the same `torch.set_num_threads`. Lightning runs
`TabularModule` in the `pl.Trainer` that `make_trainer` builds, with the product's callbacks.

The two sides alternate (A/B, then B/A) for several rounds of several epochs each, so that noise
from other processes hits both alike. Per round, ratio = fastest Lightning epoch / fastest bare
epoch: other processes only ever add time, so each side's fastest epoch is its least disturbed
one (on a shared 2-core machine this about halved the spread of the round ratios against using
medians). The figure reported per configuration is the median of the round ratios.

Validation is excluded from both sides: Lightning gets only the train loader, so no validation
loop runs; `EarlyStopping` is kept (non-strict, so it waits silently for a metric that never
comes) because every callback costs a little on every batch hook. A Lightning epoch is timed from
one `on_train_epoch_start` to the next (the last to `on_train_end`), so Lightning's epoch-end work
(logged-metric reduction, scheduler step) counts; Trainer construction and fit set-up do not, and
are shown apart as "setup".

The bare loop does not keep the epoch's mean train loss, which `TabularModule` logs: it is the
floor that Lightning is held against, not a second implementation of the product.

Run: `.venv/bin/python bench/train_overhead.py [--quick] [--threads N]`. It prints; it does not
assert. One torch thread by default: on a shared 2-core machine a second thread mostly measures
the other processes.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping
from torch.nn import functional as F

from lightning_modules.callbacks import KeepBestWeights
from lightning_modules.data import InMemoryBatches, TabularDataModule
from lightning_modules.networks import MLPSpec, build
from lightning_modules.training import FitSettings, TabularModule, make_trainer

GOAL = 1.15
# The product's default baseline (configs/default.yaml).
HIDDEN = (256, 256, 128)
CONFIGS: tuple[tuple[str, int], ...] = (
    ("digits", 128),
    ("digits", 512),
    ("synthetic_classification", 128),
    ("synthetic_classification", 512),
)


@dataclass(frozen=True)
class Budget:
    """Rounds per configuration: up to `rounds`, but no more once `seconds` have passed and
    `min_rounds` are done, so that a loaded machine cannot stretch the run past a few minutes."""

    rounds: int
    min_rounds: int
    epochs: int
    seconds: float
    warmup_rounds: int = 1


FULL = Budget(rounds=20, min_rounds=8, epochs=4, seconds=35.0)
QUICK = Budget(rounds=5, min_rounds=3, epochs=3, seconds=6.0)


@dataclass
class Result:
    dataset: str
    batch_size: int
    steps: int
    ratios: list[float]
    lightning_epoch_s: list[float]
    bare_epoch_s: list[float]
    setup_s: list[float]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)


class _TimedModule(TabularModule):
    """`TabularModule` that notes when each training epoch starts and when training ends.

    Module hooks rather than a timing callback: Lightning calls the module's hooks anyway, while
    one more callback would add its own cost to every batch hook and inflate the ratio.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: list[float] = []

    def on_train_epoch_start(self) -> None:
        self.marks.append(time.perf_counter())
        super().on_train_epoch_start()

    def on_train_end(self) -> None:
        self.marks.append(time.perf_counter())
        super().on_train_end()

    def epoch_times(self) -> list[float]:
        """Start-to-start times of the epochs; the last one ends at `on_train_end`."""
        return [end - start for start, end in zip(self.marks[:-1], self.marks[1:], strict=True)]


def _network(spec: MLPSpec, initial: dict[str, torch.Tensor]) -> torch.nn.Module:
    network = build(spec)
    network.load_state_dict(initial)
    return network


def _lightning_round(
    data: TabularDataModule,
    spec: MLPSpec,
    initial: dict[str, torch.Tensor],
    config: FitSettings,
    epochs: int,
) -> tuple[list[float], float]:
    """Epoch times of one Lightning fit, and its set-up time outside the epochs."""
    started = time.perf_counter()
    module = _TimedModule.for_data(_network(spec, initial), data, config)
    # The callbacks `fit` installs; EarlyStopping non-strict because no validation runs here.
    callbacks: list[Callback] = [
        EarlyStopping(monitor=config.monitor, mode="min", patience=config.patience, strict=False),
        KeepBestWeights(config.monitor, "min"),
    ]
    trainer = make_trainer(replace(config, max_epochs=epochs), callbacks)
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    total = time.perf_counter() - started
    times = module.epoch_times()
    assert len(times) == epochs, f"expected {epochs} epochs, timed {len(times)}"
    return times, total - sum(times)


def _bare_round(
    data: TabularDataModule,
    spec: MLPSpec,
    initial: dict[str, torch.Tensor],
    config: FitSettings,
    epochs: int,
) -> list[float]:
    """Epoch times of a plain loop: `TabularModule`'s loss and optimiser, without Lightning."""
    network = _network(spec, initial)
    network.train()
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, config.max_epochs)
    )
    regression = data.task == "regression"
    # One loader per fit, iterated once per epoch, as Lightning does: the same shuffles.
    loader: InMemoryBatches = data.train_dataloader()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        # The loader groups batches for Lightning's sake; the bare loop takes them one by one.
        for batch in (b for item in loader for b in (item if isinstance(item, list) else [item])):
            optimizer.zero_grad(set_to_none=True)
            output = network(batch["x_num"], batch["x_cat"])
            y = batch["y"]
            if regression:
                loss = F.mse_loss(output, y)
            else:
                loss = F.cross_entropy(output, y, reduction="none").mean()
            loss.backward()
            optimizer.step()
        scheduler.step()
        times.append(time.perf_counter() - started)
    return times


def _run_config(
    dataset: str, batch_size: int, budget: Budget, config: FitSettings, threads: int
) -> Result:
    data = TabularDataModule.from_bundled(dataset, batch_size=batch_size)
    spec = MLPSpec(hidden=HIDDEN, **data.network_inputs())
    torch.manual_seed(config.seed)
    initial = {k: v.clone() for k, v in build(spec).state_dict().items()}
    result = Result(dataset, batch_size, len(data.train_dataloader()), [], [], [], [])
    started = time.perf_counter()
    for index in range(budget.warmup_rounds + budget.rounds):
        if (
            len(result.ratios) >= budget.min_rounds
            and time.perf_counter() - started > budget.seconds
        ):
            break
        lightning: list[float] = []
        bare: list[float] = []
        setup = 0.0
        # A/B then B/A, so that a slow drift of the machine favours neither side.
        for side in ("lightning", "bare") if index % 2 == 0 else ("bare", "lightning"):
            # Lightning changes the thread count only for multi-process launchers; make sure.
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            # Each side starts without the other's garbage to collect.
            gc.collect()
            if side == "lightning":
                lightning, setup = _lightning_round(data, spec, initial, config, budget.epochs)
            else:
                bare = _bare_round(data, spec, initial, config, budget.epochs)
        if index < budget.warmup_rounds:
            continue
        result.ratios.append(min(lightning) / min(bare))
        result.lightning_epoch_s.extend(lightning)
        result.bare_epoch_s.extend(bare)
        result.setup_s.append(setup)
    return result


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def _print_table(results: list[Result], threads: int, budget: Budget) -> None:
    print()
    print(
        "Training epoch time, Lightning (make_trainer + TabularModule) / bare PyTorch loop; "
        f"torch threads={threads}, hidden={list(HIDDEN)}"
    )
    print(
        f"{budget.epochs} epochs per side per round, A/B alternating "
        f"(+{budget.warmup_rounds} warm-up round); validation excluded from both"
    )
    header = (
        f"{'dataset':<26}{'batch':>6}{'steps':>6}{'rounds':>7}{'bare ms':>9}{'light ms':>9}"
        f"{'setup ms':>9}{'ratio':>8}{'q1-q3':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        q1, q3 = _quartiles(r.ratios)
        print(
            f"{r.dataset:<26}{r.batch_size:>6}{r.steps:>6}{len(r.ratios):>7}"
            f"{statistics.median(r.bare_epoch_s) * 1e3:>9.1f}"
            f"{statistics.median(r.lightning_epoch_s) * 1e3:>9.1f}"
            f"{statistics.median(r.setup_s) * 1e3:>9.1f}"
            f"{r.median_ratio:>8.3f}{f'{q1:.2f}-{q3:.2f}':>12}"
        )
    print()
    print("ratio: median over the rounds of (fastest Lightning epoch / fastest bare epoch);")
    print("q1-q3: quartiles of the round ratios, i.e. the noise; bare/light ms: median epoch;")
    print("setup ms: Trainer construction and fit set-up, once per fit and not in the ratio;")
    print("steps: Lightning steps per epoch, each a group of up to 8 batches of that size.")
    print()
    print("Per-round ratios (lightning/bare):")
    for r in results:
        label = f"{r.dataset}/{r.batch_size}"
        print(f"  {label:<30}" + " ".join(f"{x:.2f}" for x in r.ratios))
    print()
    missed = [r for r in results if r.median_ratio > GOAL]
    if missed:
        names = ", ".join(f"{r.dataset}/{r.batch_size} ({r.median_ratio:.3f})" for r in missed)
        print(f"Goal ratio <= {GOAL}: NOT met for {names}.")
    else:
        worst = max(r.median_ratio for r in results)
        print(f"Goal ratio <= {GOAL}: met for every configuration (worst {worst:.3f}).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and epochs")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (default 1)"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, but got {args.threads}")
    budget = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    # Validation is left out on purpose (see the module docstring).
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    # make_trainer turns deterministic algorithms on for the whole process; the bare loop runs
    # under the same setting from the start rather than from the first Lightning round on.
    torch.use_deterministic_algorithms(True)
    config = FitSettings()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    results = []
    for dataset, batch_size in CONFIGS:
        results.append(_run_config(dataset, batch_size, budget, config, args.threads))
        print(f"  {dataset} batch {batch_size}: done ({time.perf_counter() - started:.0f} s)")
    _print_table(results, args.threads, budget)
    # Noise check: on 2 cores, a 1-minute load well above 1 means other processes competed.
    load_end = os.getloadavg()[0]
    print(
        f"total {time.perf_counter() - started:.0f} s; 1-minute load average {load_start:.2f} "
        f"at start, {load_end:.2f} at end, on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
