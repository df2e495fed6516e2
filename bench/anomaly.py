"""The seed's accordion claim, re-measured: how far a search shrinks a fraud-style autoencoder
within a 0.5-point PR-AUC drop, and an accordion against a plain funnel of equal size.

Data: `lightning_modules.datasets.synthetic_fraud` at `--rows` rows (2% fraud), seeded,
written to a CSV so that the search reads it as a user's file would.

1. The default search of `configs/accordion.yaml` (`--trials` trials, INT8 copies on): the
   confident champion's parameter and latency ratios and its test PR-AUC delta with the paired
   95% interval; and the smallest trials whose test PR AUC is within 0.5 points, 5% and 14% of
   the baseline's (point estimates; the paper reports 85-95% fewer parameters at a 5-14% drop).
2. Accordion against funnel: the baseline accordion (64-16-48, bottleneck 8, mirrored) and a
   plain funnel autoencoder (w, w/2, w/4, bottleneck 8, mirrored) whose w gives the closest
   parameter count, each trained from scratch under several seeds; mean and spread of the
   test PR AUC.

Run: `.venv/bin/python bench/anomaly.py [--rows 20000] [--trials 30] [--seeds 3]`.
It prints Markdown tables; it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402

from lightning_modules.data import TabularDataModule  # noqa: E402
from lightning_modules.datasets import synthetic_fraud  # noqa: E402
from lightning_modules.networks import KINDS, build, count_parameters  # noqa: E402
from lightning_modules.training import FitSettings, fit, quiet_lightning  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "accordion.yaml"
DROP = 0.005


def search_section(csv: Path, trials: int, folder: Path) -> str:
    from search.commands import run_search
    from search.config import load_config, override
    from search.front import champion as pick_champion
    from search.front import pareto

    config = override(load_config(CONFIG), "bench", **{
        "data.path": str(csv), "data.target": "target", "search.n_trials": trials,
        "search.study": "fraud", "search.storage": str(folder / "o.journal"),
        "tracking.uri": f"sqlite:///{folder / 'mlflow.db'}",
    })  # fmt: skip
    started = time.perf_counter()
    run_search(config, progress=False)
    seconds = time.perf_counter() - started
    study = optuna.load_study(
        study_name="fraud", storage=JournalStorage(JournalFileBackend(str(folder / "o.journal")))
    )
    table = pareto.trial_table(study)
    base = table[table["baseline"]].iloc[0]
    champion = pick_champion(study).trial
    assert champion is not None
    chosen = table[table["trial"] == champion.number].iloc[0]
    picks = [("confident champion", chosen)]
    # 0.5 points as the issue asks; 5% and 14% as the seed paper's 5-14% performance drop.
    for label, allowed in (("0.5 pt", DROP), ("5%", 0.05 * base["test_metric"]),
                           ("14%", 0.14 * base["test_metric"])):  # fmt: skip
        within = table[table["test_metric"] >= base["test_metric"] - allowed]
        smallest = within.sort_values(["parameters", "latency_ms"]).iloc[0]
        picks.append((f"smallest within {label} on test", smallest))
    rows = []
    for label, row in picks:
        rows.append([
            label, int(row["trial"]), row["approach"], row["precision"], row["hidden"],
            f"{int(row['parameters']):,}", f"{1 - row['param_ratio']:.1%}",
            f"{row['latency_ratio']:.2f}",
            f"{row['test_delta']:+.4f} "
            f"[{row['test_delta_low']:+.4f}, {row['test_delta_high']:+.4f}]",
        ])  # fmt: skip
    lines = [
        f"baseline {base['hidden']}: {int(base['parameters']):,} parameters, val PR AUC "
        f"{base['metric']:.4f}, test {base['test_metric']:.4f}; {len(table)} finished trials "
        f"in {seconds:.0f} s",
        "",
        "| pick | trial | approach | precision | widths | params | params removed | "
        "latency ratio | test PR-AUC delta [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def funnel_section(csv: Path, seeds: int) -> str:
    data = TabularDataModule.from_path(csv, "target", task="anomaly", batch_size=128)
    family = KINDS["accordion"]
    accordion = family.baseline(family.options(), **data.network_inputs())
    target = count_parameters(build(accordion))
    best = None
    for width in range(8, 257):
        spec = family.baseline(
            family.options(encoder=[width, max(1, width // 2), max(1, width // 4)]),
            **data.network_inputs(),
        )
        gap = abs(count_parameters(build(spec)) - target)
        if best is None or gap < best[0]:
            best = (gap, spec)
    assert best is not None
    funnel = best[1]
    settings = FitSettings(max_epochs=40, lr=2e-3, patience=8, accelerator="cpu")
    rows = []
    for name, spec in (("accordion", accordion), ("funnel", funnel)):
        scores = []
        for seed in range(seeds):
            result = fit(build(spec, seed=seed), data, dataclasses.replace(settings, seed=seed))
            scores.append(result.test_metrics["pr_auc"])
        rows.append([
            name, "-".join(map(str, spec.group_sizes())), f"{count_parameters(build(spec)):,}",
            f"{statistics.mean(scores):.4f}", f"{statistics.stdev(scores) if seeds > 1 else 0:.4f}",
            " ".join(f"{s:.3f}" for s in scores),
        ])  # fmt: skip
    lines = [
        "| network | widths | params | test PR AUC mean | sd | per seed |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    quiet_lightning()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv = folder / "fraud.csv"
        synthetic_fraud(seed=0, n_rows=args.rows).to_csv(csv, index=False)
        print(f"### The default accordion search ({args.rows} rows)\n")
        print(search_section(csv, args.trials, folder), flush=True)
        print(f"\n### Accordion against a plain funnel of equal size ({args.seeds} seeds)\n")
        print(funnel_section(csv, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
