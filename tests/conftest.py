from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from loopback import postgres_server
from matplotlib.image import imread
from sklearn.datasets import make_classification

from lightning_modules.data import TabularDataModule

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
def small_data(small_table: pd.DataFrame) -> TabularDataModule:
    """`small_table` split and preprocessed with the default seed and fractions."""
    return TabularDataModule.from_frame(small_table, "label")


@pytest.fixture
def small_csv(tmp_path: Path, small_table: pd.DataFrame) -> Path:
    path = tmp_path / "table.csv"
    small_table.to_csv(path, index=False)
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for the test, then the previous count back.

    For tiny tensors on a busy 2-core machine a second thread only adds waiting, up to a second
    per forward pass.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def read_png() -> Callable[[str | Path], np.ndarray]:
    """Read a PNG file as (height, width, channels) floats in [0, 1], checking it is a picture.

    A picture has the PNG signature and is not blank: some pixels are clearly darker than white,
    and it has more than a handful of distinct colours.
    """

    def read(path: str | Path) -> np.ndarray:
        path = Path(path)
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        image = imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
        rgb = image[..., :3]
        assert _ink(image) > 0.005, f"{path} is blank"
        # One integer per 8-bit colour: np.unique over rows of a million pixels is slow.
        packed = np.round(rgb * 255).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
        assert len(np.unique(packed)) > 10, f"{path} has almost no colours"
        return image

    return read


def _ink(image: np.ndarray) -> float:
    """The share of pixels that are not (nearly) white."""
    return float((image[..., :3] < 0.9).any(axis=2).mean())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL server on loopback for the whole session; logins need a password."""
    with postgres_server() as url:
        yield url
