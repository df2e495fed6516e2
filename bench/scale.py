"""Where the time and memory of `tabslim train` (and a short search) go as the table grows.

For each size, on a table from `bench/make_table.py` (45 feature columns, 4 categorical up to
1,000 levels, Parquet):
1. `tabslim train --max-epochs E` in its own process, as a user runs it: wall time, peak
   resident memory (the process's own, from `wait4`), and the run's `seconds.<phase>` metrics
   (read, preprocess, fit, profile, log, measure); what is left of the wall time is Python's
   start and the imports ("start").
2. Training throughput, Lightning against a bare PyTorch loop on the same network and the same
   batches, one epoch each, alternating, in this process (`bench/train_overhead.py`'s rounds).
3. Optionally (`--search-trials N`), `tabslim search` with N trials of E epochs: wall time,
   peak memory, and the share of it the trials spent training.

Goals (issue 23): at 1M rows training is at least 75% of train's wall time; peak memory at
most 4x the table's float32 size plus 1 GB; Lightning's throughput at least 0.8x the bare
loop's. It prints, and appends JSON lines with `--json`; it does not assert.

Run: `.venv/bin/python bench/scale.py [--rows 100000,1000000] [--epochs 2] [--search-trials 6]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from make_table import write_table  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from train_overhead import _bare_round, _lightning_round  # noqa: E402

from lightning_modules.data import TabularDataModule  # noqa: E402
from lightning_modules.networks import build  # noqa: E402
from lightning_modules.tables import read_table  # noqa: E402
from search.config import Config, load_config  # noqa: E402
from search.inputs import baseline_spec, fit_settings  # noqa: E402

PHASES = ("read", "preprocess", "fit", "profile", "log", "measure")
COLUMNS = 45
GIB = 2**30


@dataclass
class Size:
    rows: int
    table_float32_mb: float
    train_wall_s: float = 0.0
    train_peak_mb: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    lightning_rows_per_s: float = 0.0
    bare_rows_per_s: float = 0.0
    search_wall_s: float | None = None
    search_peak_mb: float | None = None
    search_train_s: float | None = None
    # Summed over the trials: `seconds.<phase>` of each trial run (train, measure, row_scores,
    # paired, save); what the search spent outside them is read, baseline setup, confirmation.
    search_phases_s: dict[str, float] = field(default_factory=dict)
    search_trials: int = 0

    @property
    def training_share(self) -> float:
        return self.train_seconds / self.train_wall_s

    @property
    def memory_goal_mb(self) -> float:
        return 4 * self.table_float32_mb + 1024


def _run(argv: list[str], cwd: Path) -> tuple[str, float, float]:
    """stdout, wall seconds and peak resident MB of one command in a process of its own."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{stderr.decode()[-2000:]}")
    return stdout.decode(), wall, usage.ru_maxrss / 1024


def _train(size: Size, table: Path, epochs: int, work: Path) -> None:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    out, size.train_wall_s, size.train_peak_mb = _run(
        [sys.executable, "-m", "search", "train", "--data", str(table), "--target", "target",
         "--max-epochs", str(epochs), "--tracking-uri", uri, "--quiet"],
        work,
    )  # fmt: skip
    run_id = re.search(r"^run (\w+) ", out, re.MULTILINE)
    assert run_id, out
    metrics = MlflowClient(uri).get_run(run_id.group(1)).data.metrics
    size.phases_s = {p: metrics.get(f"seconds.{p}", 0.0) for p in PHASES}
    size.phases_s["start"] = size.train_wall_s - sum(size.phases_s.values())
    size.train_seconds = metrics["train_seconds"]


def _epoch_seconds(config: Config, table: Path, rows: int) -> tuple[float, float, int]:
    """Lightning's and the bare loop's faster epoch (of two each) of `config`'s baseline on the
    first `rows` rows of `table`, and the training rows they ran over."""
    data = TabularDataModule.from_frame(read_table(table).head(rows), "target")
    spec = baseline_spec(config, data)
    torch.manual_seed(0)
    initial = {k: v.clone() for k, v in build(spec).state_dict().items()}
    settings = fit_settings(config)
    lightning, bare = float("inf"), float("inf")
    for _ in range(2):  # alternating; each side's faster epoch is its less disturbed one
        lightning = min(lightning, _lightning_round(data, spec, initial, settings, 1)[0][0])
        bare = min(bare, _bare_round(data, spec, initial, settings, 1)[0])
    return lightning, bare, len(data.tensors["train"]["y"])


def _throughput(size: Size, table: Path) -> None:
    """Rows per second of one training epoch, Lightning and bare, on the default baseline."""
    lightning, bare, rows = _epoch_seconds(Config(), table, size.rows)
    size.lightning_rows_per_s, size.bare_rows_per_s = rows / lightning, rows / bare


def _search(size: Size, table: Path, epochs: int, trials: int, work: Path) -> None:
    uri = f"sqlite:///{work / 'search.db'}"
    _, size.search_wall_s, size.search_peak_mb = _run(
        [sys.executable, "-m", "search", "search", "--data", str(table), "--target", "target",
         "--max-epochs", str(epochs), "--n-trials", str(trials), "--tracking-uri", uri,
         "--storage", str(work / "search.journal"), "--study", "scale", "--quiet"],
        work,
    )  # fmt: skip
    runs = MlflowClient(uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri).search_experiments()],
        "tags.`tabslim.kind` = 'trial'",
    )
    size.search_train_s = sum(r.data.metrics.get("train_seconds", 0.0) for r in runs)
    size.search_trials = len(runs)
    for run in runs:
        for name, seconds in run.data.metrics.items():
            if name.startswith("seconds."):
                phase = name.removeprefix("seconds.")
                size.search_phases_s[phase] = size.search_phases_s.get(phase, 0.0) + seconds


def _print(sizes: list[Size]) -> None:
    print(f"\n{'rows':>10} {'wall s':>7} {'train%':>7} " + " ".join(f"{p:>10}" for p in
          (*PHASES, "start")) + f" {'peak MB':>8} {'goal MB':>8} {'L rows/s':>9} {'bare':>9}"
          f" {'L/bare':>6}")  # fmt: skip
    for s in (s for s in sizes if s.train_wall_s):
        phases = " ".join(f"{s.phases_s.get(p, 0.0):>10.2f}" for p in (*PHASES, "start"))
        print(
            f"{s.rows:>10} {s.train_wall_s:>7.1f} {100 * s.training_share:>6.1f}% {phases} "
            f"{s.train_peak_mb:>8.0f} {s.memory_goal_mb:>8.0f} {s.lightning_rows_per_s:>9.0f} "
            f"{s.bare_rows_per_s:>9.0f} {s.lightning_rows_per_s / max(s.bare_rows_per_s, 1):>6.2f}"
        )
    for s in sizes:
        if s.search_wall_s is not None:
            share = (s.search_train_s or 0.0) / s.search_wall_s
            print(
                f"search at {s.rows} rows: {s.search_wall_s:.1f} s wall, trials trained "
                f"{s.search_train_s:.1f} s ({100 * share:.0f}% of the wall time, with "
                f"--workers 1), peak {s.search_peak_mb:.0f} MB"
            )
            inside = sum(s.search_phases_s.values())
            print(
                f"  summed over its {s.search_trials} trial runs: "
                + ", ".join(f"{p} {v:.1f} s" for p, v in s.search_phases_s.items())
                + f"; outside the trials' phases {s.search_wall_s - inside:.1f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", default="100000,1000000", help="comma-separated sizes ('' for none)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--search-trials", type=int, default=0, help="0: no search")
    parser.add_argument("--search-max-rows", type=int, default=100_000,
                        help="run the search only at sizes up to this")  # fmt: skip
    parser.add_argument("--json", type=Path, help="append one JSON line per size")
    parser.add_argument("--search-only", action="store_true", help="skip train and throughput")
    parser.add_argument("--no-throughput", action="store_true", help="skip the epoch timing")
    parser.add_argument(
        "--epoch-config",
        type=Path,
        help="also time an epoch of this config's baseline (e.g. configs/s1.yaml)",
    )
    parser.add_argument(
        "--epoch-rows",
        type=int,
        default=20_000,
        help="rows of the table that epoch runs over, scaled to 1M rows",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `tabslim train` trains (training.threads: 1)
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")
    sizes = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for rows in [int(r) for r in args.rows.split(",") if r]:
            table = write_table(work / f"t{rows}.parquet", rows, COLUMNS)
            # float32 features (the 4 categorical as one index each) and the target.
            size = Size(rows, rows * (COLUMNS + 1) * 4 / 2**20)
            if not args.search_only:
                print(f"{rows} rows: train...", flush=True)
                _train(size, table, args.epochs, work)
                if not args.no_throughput:
                    print(f"{rows} rows: throughput...", flush=True)
                    _throughput(size, table)
            if args.search_trials and rows <= args.search_max_rows:
                print(f"{rows} rows: search...", flush=True)
                _search(size, table, args.epochs, args.search_trials, work)
            sizes.append(size)
            table.unlink()
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps(asdict(size) | {"epochs": args.epochs}) + "\n")
        if args.epoch_config:
            table = write_table(work / "epoch.parquet", args.epoch_rows, COLUMNS)
            config = load_config(args.epoch_config)
            lightning, bare, rows = _epoch_seconds(config, table, args.epoch_rows)
            train_rows_1m = 1_000_000 * (1 - config.data.val_fraction - config.data.test_fraction)
            scaled = lightning * train_rows_1m / rows
            print(
                f"{args.epoch_config}: an epoch over {rows} training rows took {lightning:.1f} s "
                f"(bare loop {bare:.1f} s, {torch.get_num_threads()} thread(s)); over the "
                f"{train_rows_1m:.0f} training rows of 1M, about {scaled:.0f} s "
                "(scaled linearly)"
            )
    _print(sizes)


if __name__ == "__main__":
    main()
