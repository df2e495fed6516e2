"""The population method: search on a sample of a large real table, judge every trial on the
rest of it, which the study never saw.

Per study (table x sample size x seed x floor), `tabslim search` runs as a user runs it
(`run_search`, the default config but for the data, the trials and the floor) on a seeded
sample. Then every trained trial (and INT8 copy) is scored on **the population**, the rows the
sample left out (at most `--population-rows` of them), paired with the baseline: its delta with
a 95% interval on tens of thousands of rows, the truth that the test split only estimates.

Reported per study, and summed up against the goals:
- a **false certificate**: the champion's population interval lies wholly below the floor;
- **regret**: the champion's size over the population oracle's, the smallest trial whose
  population delta is at least minus half the floor (1 is the oracle itself);
- whether the baseline was crowned while a smaller trial held the floor on the population;
- the wall time of the search plus its certification;
- the champion's label-free estimate (CBPE, from its registered model) against the accuracy
  it realizes, on population rows shifted in one feature alone (the rows above that
  feature's median), where only the inputs moved.

Run: `.venv/bin/python bench/population.py --tables fertility.csv:morekids,tv16.csv:votetrump
--samples 6000,14000 --seeds 0 --floors 0.005,0.0025 --trials 16 --json out.jsonl`. A table is
`FILE:TARGET` (CSV or Parquet, at least 50,000 rows). It prints one line per study and a
summary; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_modules.metrics import row_scores  # noqa: E402
from lightning_modules.tables import read_table  # noqa: E402
from lightning_modules.task import Task  # noqa: E402
from search.commands import run_search  # noqa: E402
from search.config import validate  # noqa: E402
from search.front import champion  # noqa: E402
from search.measure import paired_delta  # noqa: E402
from search.monitor.estimated import estimated_metric  # noqa: E402
from search.monitor.realized import served_frame  # noqa: E402
from search.serving import load_network, read_profile  # noqa: E402
from search.serving.network_files import predict_frame  # noqa: E402
from search.serving.served_model import OnnxPredictor  # noqa: E402
from search.study import StudyKey  # noqa: E402

try:  # a study made before certification rows had no power statement
    from search.study import read_power  # noqa: E402
except ImportError:  # pragma: no cover - the benchmark run against the code before
    read_power = lambda study: None  # noqa: E731
from search.study.settings import SIZE_METRICS  # noqa: E402


def _study_config(table: Path, target: str, trials: int, floor: float, seed: int, tmp: Path):
    raw = {
        "data": {"path": str(table), "target": target, "seed": seed},
        "search": {
            "n_trials": trials,
            "max_metric_drop": floor,
            "seed": seed,
            "storage": str(tmp / "study.journal"),
            "study": "population",
        },
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "population"},
    }
    return validate(raw, "bench")


def _population_rows(directory: Path, population: pd.DataFrame, target: str) -> np.ndarray:
    """Per population row, 0/1 correct, from the trial's own served graph (INT8 copies too)."""
    features = population.drop(columns=[target])
    if (directory / "model.onnx").exists():  # an INT8 copy keeps the graph it was judged as
        predictor = OnnxPredictor(directory)
        predicted, task = predictor.predict(features), predictor.preprocessor.task
    else:
        _, network, preprocessor = load_network(directory)
        predicted, task = predict_frame(network, preprocessor, features), preprocessor.task
    return row_scores(Task(task), predicted["prediction"].to_numpy(), population[target])


def _estimate(
    tracking: str, population: pd.DataFrame, target: str, shift_column: str | None
) -> dict[str, Any]:
    """The registered champion's CBPE estimate against what it realizes, on the population
    rows above `shift_column`'s median (a shift of the features alone)."""
    import mlflow

    mlflow.set_tracking_uri(tracking)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/population@champion"))
    network_dir = local / "artifacts" / "network"
    profile = read_profile(network_dir, "models:/population@champion")
    rows = population
    if shift_column is not None:
        rows = population[population[shift_column] > population[shift_column].median()]
    features = rows.drop(columns=[target])
    served = served_frame(network_dir, features)
    estimated = estimated_metric(profile, network_dir, features, served)
    realized = float(np.mean(served["prediction"].astype(str).to_numpy()
                             == rows[target].astype(str).to_numpy()))  # fmt: skip
    if estimated is None:
        return {"realized": realized}
    return {
        "estimated": estimated.value,
        "estimated_low": estimated.low,
        "estimated_high": estimated.high,
        "realized": realized,
        "reference": estimated.reference,
        "shift_rows": len(rows),
    }


def run_study(
    frame: pd.DataFrame,
    target: str,
    name: str,
    sample: int,
    seed: int,
    floor: float,
    trials: int,
    population_rows: int,
    keep: Path | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(frame), sample, replace=False))
    rest = np.setdiff1d(np.arange(len(frame)), chosen)
    if len(rest) > population_rows:
        rest = np.sort(rng.choice(rest, population_rows, replace=False))
    population = frame.iloc[rest].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name) if keep is None else keep / f"{name}-{sample}-{seed}-{floor:g}"
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "sample.csv"
        frame.iloc[chosen].to_csv(path, index=False)
        config = _study_config(path, target, trials, floor, seed, tmp)
        started = time.perf_counter()
        outcome = run_search(config, progress=False)
        wall = time.perf_counter() - started
        import optuna

        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp / "study.journal"))
        )
        study = optuna.load_study(study_name="population", storage=storage)
        trials_dir = tmp / "studies" / "population"
        size = SIZE_METRICS[config.search.size]
        done = [t for t in study.trials if t.values is not None and "repeat_of" not in t.user_attrs]
        base = next(t for t in done if t.user_attrs.get("baseline"))
        base_rows = _population_rows(trials_dir / f"trial-{base.number}", population, target)
        truth: dict[int, Any] = {}
        for trial in done:
            rows = _population_rows(trials_dir / f"trial-{trial.number}", population, target)
            truth[trial.number] = paired_delta(rows, base_rows, "accuracy", seed=0)
        picked = champion(study).trial
        assert picked is not None
        sizes = {t.number: float(t.user_attrs["metrics"][size]) for t in done}
        holds = [n for n, d in truth.items() if d.delta >= -floor / 2]
        oracle = min(holds, key=lambda n: sizes[n])
        chosen_truth = truth[picked.number]
        smaller_held = [n for n in truth if sizes[n] < sizes[base.number] and truth[n].low > -floor]
        shift = next(
            (c for c in population.columns
             if c != target and pd.api.types.is_numeric_dtype(population[c])
             and population[c].nunique() > 10),
            None,
        )  # fmt: skip
        estimate = _estimate(config.tracking.uri, population, target, shift)
        cost = study.user_attrs.get(StudyKey.CONFIRM_COST) or {}
        power = read_power(study)
    return {
        "table": name,
        "sample": sample,
        "seed": seed,
        "floor": floor,
        "trials": outcome.trials,
        "champion": picked.number,
        "champion_is_baseline": bool(picked.user_attrs.get("baseline")),
        "champion_ratio": sizes[picked.number] / sizes[base.number],
        "champion_population": [chosen_truth.delta, chosen_truth.low, chosen_truth.high],
        "false_certificate": (not picked.user_attrs.get("baseline")) and chosen_truth.high < -floor,
        "oracle": oracle,
        "oracle_ratio": sizes[oracle] / sizes[base.number],
        "regret": sizes[picked.number] / sizes[oracle],
        "baseline_while_smaller_held": bool(picked.user_attrs.get("baseline"))
        and bool(smaller_held),
        "wall_seconds": wall,
        "certify_seconds": float(cost.get("seconds", 0.0)),
        "judged": cost.get("candidates"),
        "chain": cost.get("chain"),
        "of": cost.get("of"),
        "power_floor": None if power is None else power.floor,
        "shift_column": shift,
        **estimate,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", required=True, help="FILE:TARGET,...")
    parser.add_argument("--samples", default="6000,14000")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--floors", default="0.005")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--population-rows", type=int, default=40_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="keep each study's files under this folder")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results = []
    for spec in args.tables.split(","):
        file, target = spec.rsplit(":", 1)
        frame = read_table(file)
        frame = frame[frame[target].notna()].reset_index(drop=True)
        for sample in map(int, args.samples.split(",")):
            for seed in map(int, args.seeds.split(",")):
                for floor in map(float, args.floors.split(",")):
                    result = run_study(
                        frame, target, Path(file).stem, sample, seed, floor, args.trials,
                        args.population_rows, args.keep,
                    )  # fmt: skip
                    results.append(result)
                    print(_line(result), flush=True)
                    if args.json:
                        with args.json.open("a") as out:
                            out.write(json.dumps(result, default=_json) + "\n")
    _summary(results)


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def _line(r: dict[str, Any]) -> str:
    d, low, high = r["champion_population"]
    estimate = (
        f"estimate {r['estimated']:.4f} vs realized {r['realized']:.4f}"
        if "estimated" in r
        else "no estimate"
    )
    return (
        f"{r['table']} n={r['sample']} seed={r['seed']} floor={r['floor']:g}: champion trial "
        f"{r['champion']} ({r['champion_ratio']:.3g}x) population {d:+.4f} [{low:+.4f}, "
        f"{high:+.4f}]{' FALSE CERTIFICATE' if r['false_certificate'] else ''}; oracle "
        f"{r['oracle_ratio']:.3g}x, regret {r['regret']:.2f}; {r['wall_seconds']:.0f} s "
        f"(certification {r['certify_seconds']:.1f} s, judged {r['judged']} of a chain of "
        f"{r['chain']}, {r['of']} candidates); {estimate}"
    )


def _summary(results: list[dict[str, Any]]) -> None:
    if not results:
        return
    regrets = [r["regret"] for r in results]
    large = [r["regret"] for r in results if r["sample"] >= 14_000]
    errors = [abs(r["estimated"] - r["realized"]) for r in results if "estimated" in r]
    print(
        f"\n{len(results)} studies: false certificates "
        f"{sum(r['false_certificate'] for r in results)}; median regret "
        f"{statistics.median(regrets):.2f} (max {max(regrets):.2f}); on samples "
        f">= 14,000 rows max regret {max(large) if large else math.nan:.2f}; baseline crowned "
        f"while a smaller trial held {sum(r['baseline_while_smaller_held'] for r in results)}; "
        f"median wall {statistics.median(r['wall_seconds'] for r in results):.0f} s; estimate "
        f"error median {statistics.median(errors) if errors else math.nan:.4f}, max "
        f"{max(errors) if errors else math.nan:.4f}"
    )


if __name__ == "__main__":
    main()
