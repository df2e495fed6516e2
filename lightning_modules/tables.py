"""Table files: found and read with pandas alone.

No torch and no Lightning here, so that the CLI can name a missing file before it imports them
(that took 9.5 s and 646 MB before the one-line error).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lightning_modules.errors import TabslimInputError

__all__ = ["check_table_file", "read_table"]


def check_table_file(path: str | Path) -> Path:
    """`path` as a Path, or a one-line error when no file is there."""
    path = Path(path)
    if not path.is_file():
        raise TabslimInputError(
            f"data file '{path}' does not exist (expected a CSV or Parquet file)"
        )
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, or a one-line error naming the file."""
    path = check_table_file(path)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise TabslimInputError(
            f"data file '{path}' is empty (expected a CSV with a header row)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise TabslimInputError(f"could not read '{path}' as a table: {first_line}") from None
    if frame.empty:
        raise TabslimInputError(f"data file '{path}' has a header but no rows")
    return frame
