"""Wall time of the multivariate drift detector (the classifier two-sample test of
`search.monitor.multivariate`) against the number of new rows (issue 24).

The new rows come from `bench/make_table.py`'s table (45 columns: 41 numeric, some with gaps,
and 4 categorical ones with 5 to 1,000 levels), built in memory; the reference is 2,000 rows of
the same process (what `tracking.reference_rows` stores by default), and 5,000 for the capped
case. The detector subsamples the new rows to the reference count, so the time should not grow
with them beyond drawing the sample. A shifted copy (two numeric columns swapped in sign
together with a categorical's mix changed) shows the time when there is something to find.

Run: `.venv/bin/python bench/c2st_time.py [--rows 100000 1000000] [--repeats 3]`.
It prints a Markdown table (best of `--repeats`); it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from make_table import TARGET, table_block  # noqa: E402

from search.monitor import Multivariate, classifier_two_sample  # noqa: E402

COLUMNS = 45


def _shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """num_1's marginal kept but its sign tied to num_0's (a joint shift), and cat_0 re-mixed."""
    out = frame.copy()
    out["num_1"] = np.where(out["num_0"] > 0, -1.0, 1.0) * out["num_1"].abs()
    out.loc[out.index[: len(out) // 4], "cat_0"] = "level_0"
    return out


def _best(reference: pd.DataFrame, new: pd.DataFrame, repeats: int) -> tuple[float, Multivariate]:
    columns = [c for c in new.columns if c != TARGET]
    best = float("inf")
    found = classifier_two_sample(reference, new, columns, seed=0)  # warm: sklearn's import
    for _ in range(repeats):
        started = time.perf_counter()
        found = classifier_two_sample(reference, new, columns, seed=0)
        best = min(best, time.perf_counter() - started)
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; machine shared with other work, so times are best of "
          f"{args.repeats}")  # fmt: skip
    references = {n: table_block(n, COLUMNS, seed=1) for n in (2000, 5000)}
    print("| new rows | reference rows | data | rows used a side | AUC [95%] | drifted | s |")
    print("|---:|---:|---|---:|---|---|---:|")
    for rows in args.rows:
        new = table_block(rows, COLUMNS, seed=2)
        cases = [(2000, "alike", new), (5000, "alike", new), (2000, "shifted", _shifted(new))]
        for ref_rows, kind, frame in cases:
            seconds, found = _best(references[ref_rows], frame, args.repeats)
            print(
                f"| {rows:,} | {ref_rows:,} | {kind} | {found.new_rows:,} | "
                f"{found.auc:.3f} [{found.low:.3f}, {found.high:.3f}] | "
                f"{'yes' if found.drifted else 'no'} | {seconds:.2f} |"
            )


if __name__ == "__main__":
    main()
