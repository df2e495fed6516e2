from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification


@pytest.fixture
def small_table() -> pd.DataFrame:
    """A few hundred rows: numeric and categorical columns, gaps, a binary string target."""
    x, y = make_classification(
        n_samples=300, n_features=6, n_informative=4, random_state=0, class_sep=1.5
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["shop"] = rng.choice(["north", "south", "east"], size=len(frame))
    frame.loc[rng.random(len(frame)) < 0.1, "f0"] = np.nan
    frame["label"] = np.where(y == 1, "yes", "no")
    return frame


@pytest.fixture
def small_csv(tmp_path: Path, small_table: pd.DataFrame) -> Path:
    path = tmp_path / "table.csv"
    small_table.to_csv(path, index=False)
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
