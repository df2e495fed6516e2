"""Retraining under drift, replayed batch by batch: three policies, and compact against baseline.

A time-ordered stream is cut into batches. After each batch a policy may retrain; the model it
then holds is scored on the next batch.
- never: the first model, trained on batch 0, forever;
- always: a new model trained from scratch on every batch;
- tabslim: `tabslim retrain` on every batch (a real SQLite registry): it retrains only when the
  realized metric fell or the columns drifted, and promotes only on paired holdout evidence;
- metric only: the same with `--drift-threshold inf`, so that only a measured fall of the
  realized metric (or nothing) calls for a retrain; `retrain` always has labels.
- label-free: the labels come one batch late. `tabslim retrain` gets the previous batch with
  its labels and the new batch without them: the new rows are judged by the champion's
  estimated metric (CBPE or DLE) and their drift, and challengers train on the labelled rows.
Per batch, the estimate of the first model (and of the label-free champion) on the unlabelled
rows is set beside the metric realized once the labels are known: its error and whether the
realized value lies in the estimate's 95% interval.
Beside them, the seed's claim (Klemetti et al.): the compact network retrains faster than the
baseline at the same accuracy. Both shapes are trained from scratch on every batch, timed side
by side, and scored on the next batch.

Stream: the bundled drift generator by default (batches: none, none, covariate, covariate,
concept, concept, none, none), or `--data FILE.csv:TARGET:TIME_COLUMN` for a real table
sorted by its time column and cut into `--batches` equal parts.

Run: `.venv/bin/python bench/drift_retrain.py [--data f.csv:target:time] [--batches 8]
[--rows 2000] [--max-epochs 20] [--policies tabslim,metric,label-free] [--skip-shapes]`
(`--rows`: rows per generated batch; `--skip-shapes`: no compact-against-baseline timing). It
prints markdown tables; it asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from lightning_modules.data import TabularDataModule  # noqa: E402
from lightning_modules.datasets import drift_batch  # noqa: E402
from lightning_modules.networks import MLPSpec, build  # noqa: E402
from lightning_modules.training import FitSettings, fit  # noqa: E402
from search.commands import run_retrain  # noqa: E402
from search.monitor import estimated_metric, frame_scores, served_frame  # noqa: E402
from search.serving import OnnxPredictor, build_profile, log_model, read_profile  # noqa: E402

BASELINE, COMPACT = (256, 256, 128), (32, 32, 16)
# tabslim's policies: the default decision, the realized metric alone, and labels a batch late.
POLICIES = {"tabslim": "stream", "metric": "stream-metric-only", "label-free": "stream-late"}
THRESHOLDS = {"tabslim": 0.1, "metric": float("inf"), "label-free": 0.1}
SYNTHETIC = ["none", "none", "covariate", "covariate", "concept", "concept", "none", "none"]


def _stream(args: argparse.Namespace) -> tuple[list[pd.DataFrame], str, str | None]:
    if args.data is None:
        rows = args.rows
        batches = [drift_batch(kind, seed=i, n_rows=rows) for i, kind in enumerate(SYNTHETIC)]
        for i, batch in enumerate(batches):
            start = pd.Timestamp("2025-01-01") + pd.Timedelta(hours=rows * i)
            batch["at"] = pd.date_range(start, periods=len(batch), freq="h").astype(str)
        return batches, "churned", "at"
    path, target, column = args.data.rsplit(":", 2)
    frame = pd.read_csv(path).sort_values(column, kind="stable").reset_index(drop=True)
    edges = np.linspace(0, len(frame), args.batches + 1).astype(int)
    parts = [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(edges, edges[1:], strict=False)]
    return parts, target, column


def _train(frame: pd.DataFrame, target: str, column: str | None, hidden: tuple, epochs: int):
    data = TabularDataModule.from_frame(frame, target, time_column=column)
    spec = MLPSpec(hidden=hidden, **data.network_inputs())
    started = time.perf_counter()
    result = fit(build(spec, seed=0), data, FitSettings(max_epochs=epochs), evaluate_test=False)
    return result.network, data, time.perf_counter() - started


def _served_score(predicted: np.ndarray, truth: pd.Series, task: str) -> float:
    if task == "regression":
        return float(np.sqrt(np.mean((predicted - truth.to_numpy()) ** 2)))
    return float(np.mean(predicted.astype(str) == truth.astype(str).to_numpy()))


def _score(network, prep, frame: pd.DataFrame, target: str) -> float:
    rows = frame_scores(network, prep, frame, target)
    return float(np.sqrt(rows.mean())) if prep.task == "regression" else float(rows.mean())


def _champion_dir(name: str) -> Path:
    served = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    return served / "artifacts" / "network"


def _estimate(network_dir: Path, batch: pd.DataFrame, target: str, task: str) -> dict:
    """The model's estimated metric on `batch` without its labels, and the realized one."""
    profile = read_profile(network_dir, str(network_dir))
    rows = batch.drop(columns=[target])
    served = served_frame(network_dir, rows)
    estimate = estimated_metric(profile, network_dir, rows, served)
    realized = _served_score(served["prediction"].to_numpy(), batch[target], task)
    if estimate is None:
        return {"realized": realized}
    return {
        "estimate": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
        "realized": realized,
        "covered": estimate.low <= realized <= estimate.high,
        "outside": estimate.outside,
    }


def _late_file(previous: pd.DataFrame, batch: pd.DataFrame, target: str, path: Path) -> Path:
    """The previous batch with its labels, then this one with its labels not come yet."""
    pending = batch.assign(**{target: np.nan})
    pd.concat([previous, pending], ignore_index=True).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000, help="rows per generated batch")
    parser.add_argument("--policies", default=",".join(POLICIES), help="of " + ",".join(POLICIES))
    parser.add_argument("--skip-shapes", action="store_true", help="no compact/baseline timing")
    args = parser.parse_args(argv)
    policies = {p: POLICIES[p] for p in args.policies.split(",")}
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    batches, target, column = _stream(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        first, data, _ = _train(batches[0], target, column, COMPACT, args.max_epochs)
        with mlflow.start_run():
            info = log_model(first.spec, first, data.preprocessor, data.example_rows(),
                             profile=build_profile(data, first))  # fmt: skip
        # Two registered models from the same first model: one per tabslim policy.
        for name in policies.values():
            version = mlflow.register_model(info.model_uri, name)
            MlflowClient().set_registered_model_alias(name, "champion", version.version)
        first_dir = _champion_dir(next(iter(policies.values())))
        never = (first, data.preprocessor)
        always = never
        rows = []
        for i, batch in enumerate(batches[:-1]):
            following = batches[i + 1]
            path = Path(tmp) / f"batch-{i}.csv"
            batch.to_csv(path, index=False)
            row: dict = {"batch": i}
            if i and "label-free" in policies:
                # Before its retrain: the label-free champion's estimate on the new rows.
                row["late_estimate"] = _estimate(
                    _champion_dir(policies["label-free"]), batch, target, data.task
                )
            if i:
                row["first_estimate"] = _estimate(first_dir, batch, target, data.task)
            for policy, name in policies.items():
                action, seconds = "trained first", 0.0
                if i:
                    given = path
                    if policy == "label-free":
                        given = _late_file(
                            batches[i - 1], batch, target, Path(tmp) / f"late-{i}.csv"
                        )
                    tick = time.perf_counter()
                    outcome = run_retrain(name, str(given), target, tracking_uri=uri,
                                          time_column=column,
                                          drift_threshold=THRESHOLDS[policy])  # fmt: skip
                    action, seconds = outcome.action, time.perf_counter() - tick
                predictor = OnnxPredictor(_champion_dir(name))
                predicted = predictor.predict(following)["prediction"].to_numpy()
                row |= {policy: _served_score(predicted, following[target], data.task),
                        f"{policy}_action": action, f"{policy}_s": seconds}  # fmt: skip
            if i:
                tick = time.perf_counter()
                network, fresh, _ = _train(batch, target, column, COMPACT, args.max_epochs)
                always = (network, fresh.preprocessor)
                always_seconds = time.perf_counter() - tick
            row |= {
                "never": _score(*never, following, target),
                "always": _score(*always, following, target),
                "always_s": always_seconds if i else 0.0,
            }
            if not args.skip_shapes:
                # The seed's claim: compact and baseline shapes retrained side by side.
                compact, compact_data, compact_s = _train(
                    batch, target, column, COMPACT, args.max_epochs
                )
                base, base_data, base_s = _train(batch, target, column, BASELINE, args.max_epochs)
                row |= {
                    "compact": _score(compact, compact_data.preprocessor, following, target),
                    "compact_s": compact_s,
                    "baseline": _score(base, base_data.preprocessor, following, target),
                    "baseline_s": base_s,
                }
            rows.append(row)
            print(f"batch {i}: " + "; ".join(f"{p} {row[f'{p}_action']}" for p in policies),
                  flush=True)  # fmt: skip
    _report(rows, data.task, time.perf_counter() - started, list(policies))
    return 0


def _report(rows: list[dict], task: str, seconds: float, policies: list[str]) -> None:
    metric = "RMSE" if task == "regression" else "accuracy"
    print(f"\n{len(rows)} batches scored on the next one ({metric}), {seconds:.0f} s in all\n")
    shapes = "compact" in rows[0]
    print("| batch | never | always | " + " | ".join(f"{p} | {p} did" for p in policies)
          + (" | compact (s) | baseline (s) |" if shapes else " |"))  # fmt: skip
    print("|---" * (3 + 2 * len(policies) + 2 * shapes) + "|")
    for r in rows:
        cells = [f"{r['batch']}", f"{r['never']:.4f}", f"{r['always']:.4f}"]
        cells += [c for p in policies for c in (f"{r[p]:.4f}", r[f"{p}_action"])]
        if shapes:
            cells += [f"{r['compact']:.4f} ({r['compact_s']:.1f})",
                      f"{r['baseline']:.4f} ({r['baseline_s']:.1f})"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    scored = rows[1:]  # batch 0 is the first training for every policy
    mean = {k: statistics.fmean(r[k] for r in scored) for k in ("never", "always", *policies)}
    print(
        f"\nmean on the next batch (batches 1..{len(rows) - 1}): never {mean['never']:.4f}, "
        f"always {mean['always']:.4f} ({len(scored)} retrains, "
        f"{sum(r['always_s'] for r in scored):.1f} s)"
    )
    for policy in policies:
        actions = [r[f"{policy}_action"] for r in scored]
        retrains = sum(a == "promoted" or a.startswith("retrained") for a in actions)
        print(
            f"- {policy}: {mean[policy]:.4f} ({retrains} retrains, "
            f"{sum(r[f'{policy}_s'] for r in scored):.1f} s incl. checks)"
        )
    _report_estimates(rows, metric)
    if shapes:
        ratio = statistics.median(r["baseline_s"] / r["compact_s"] for r in rows)
        gap = statistics.fmean(r["baseline"] - r["compact"] for r in rows)
        # Accuracy: higher is better; RMSE: lower is.
        better = gap > 0 if task != "regression" else gap < 0
        print(
            f"compact {COMPACT} against baseline {BASELINE}, retrained from scratch on each "
            f"batch: median time ratio {ratio:.2f}x (goal >= 3x); on the next batch the "
            f"baseline is {'better' if better else 'worse'} by {abs(gap):.4f} {metric} on average"
        )


def _report_estimates(rows: list[dict], metric: str) -> None:
    """Estimated against realized on each new batch, without its labels."""
    for key, who in (("first_estimate", "the first model"), ("late_estimate", "label-free's")):
        found = [r[key] for r in rows if key in r and "estimate" in r[key]]
        if not found:
            continue
        print(f"\n{who} {metric} on each new batch, estimated without its labels:\n")
        print("| batch | estimate | 95% interval | realized | error | covered | beyond range |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            e = r.get(key, {})
            if "estimate" in e:
                covered = "yes" if e["covered"] else "no"
                print(f"| {r['batch']} | {e['estimate']:.4f} | [{e['low']:.4f}, {e['high']:.4f}] "
                      f"| {e['realized']:.4f} | {e['estimate'] - e['realized']:+.4f} | "
                      f"{covered} | {e.get('outside', 0.0):.0%} |")  # fmt: skip
        error = statistics.fmean(abs(e["estimate"] - e["realized"]) for e in found)
        scale = statistics.fmean(e["realized"] for e in found)
        covered = sum(e["covered"] for e in found) / len(found)
        goal = "1 point" if metric == "accuracy" else "5% of RMSE"
        print(f"mean absolute error {error:.4f} ({100 * error / scale:.1f}% of the mean realized) "
              f"(goal: within {goal}); coverage {covered:.0%} (goal >= 90%)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
