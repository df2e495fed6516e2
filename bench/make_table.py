"""A large synthetic table for scale checks, written as Parquet: `python bench/make_table.py
--rows 1000000 --out /tmp/t.parquet`.

Shaped like the wide tables users bring: mostly numeric columns (some with gaps), a few
categorical ones with up to 1,000 levels, and a binary target that depends on both. Generated
in blocks so that a 10M-row table never needs more than a block of float64 at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TARGET = "target"
# Levels of the categorical columns: a few, dozens, hundreds, a thousand.
LEVELS = (5, 40, 300, 1000)
_BLOCK = 250_000


def table_block(rows: int, columns: int, seed: int) -> pd.DataFrame:
    """`rows` rows: `columns` feature columns (the last len(LEVELS) categorical) and the target."""
    rng = np.random.default_rng(seed)
    n_cat = min(len(LEVELS), max(columns - 1, 0))
    n_num = columns - n_cat
    x = rng.normal(size=(rows, n_num)).astype(np.float32)
    # Fixed weights (not drawn from the block's seed), so every block has the same concept.
    weights = np.random.default_rng(12345).normal(size=n_num) / np.sqrt(max(n_num, 1))
    logit = x @ weights
    frame = pd.DataFrame(x, columns=[f"num_{i}" for i in range(n_num)])
    for i, levels in enumerate(LEVELS[:n_cat]):
        codes = rng.integers(0, levels, size=rows)
        logit += np.where(codes % 3 == 0, 0.8, -0.4)
        frame[f"cat_{i}"] = pd.Categorical.from_codes(
            codes, categories=[f"level_{j}" for j in range(levels)]
        ).astype(str)
    # Gaps in a tenth of the numeric columns, as real tables have.
    for i in range(0, n_num, 10):
        frame.loc[rng.random(rows) < 0.05, f"num_{i}"] = np.nan
    frame[TARGET] = (logit + rng.logistic(size=rows) > 0).astype(np.int64)
    return frame


def write_table(path: Path, rows: int, columns: int = 45, seed: int = 0) -> Path:
    """Write the table to `path` (Parquet) block by block; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for index, start in enumerate(range(0, rows, _BLOCK)):
            block = table_block(min(_BLOCK, rows - start), columns, seed * 1_000_003 + index)
            table = pa.Table.from_pandas(block, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=45, help="feature columns (default 45)")
    parser.add_argument("--out", type=Path, required=True, help="a .parquet path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_table(args.out, args.rows, args.columns, args.seed)
    print(f"{args.out}: {args.rows} rows, {args.columns} feature columns and '{TARGET}'")


if __name__ == "__main__":
    main()
