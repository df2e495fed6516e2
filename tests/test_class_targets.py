"""A classification target that cannot be one (a continuous float, or more classes than rows
can teach) is refused in one line before memory is spent on it; the served frame of a model
of many classes is built in one step."""

from __future__ import annotations

import resource
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_modules.data import check_table
from lightning_modules.errors import TabslimInputError
from search.serving.served_model import prediction_frame

ROOT = Path(__file__).resolve().parent.parent
# Address space for the whole `tabslim train` process: torch and MLflow load within it, and
# the refusal must come before the per-class tensors (16 GB asked for at 2,400 classes).
_CAP = 2 * 2**30


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_CAP, _CAP))


def test_a_continuous_target_as_classes_is_refused_under_a_memory_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=2400), "b": rng.normal(size=2400)})
    table["y"] = 2 * table["a"] + rng.normal(size=2400)
    table.to_csv(tmp_path / "t.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "search", "train", "--data", str(tmp_path / "t.csv"),
         "--target", "y", "--task", "classification", "--max-epochs", "1",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=ROOT, capture_output=True, text=True, preexec_fn=_cap, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1
    assert "2,400 distinct values" in done.stderr and "--task regression" in done.stderr


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([f"id-{i}" for i in range(600)], None),  # an identifier, inferred as classes
        (list(range(300)) * 2, "classification"),  # 300 classes of 2 rows each
        ([i + 0.5 for i in range(40)] * 15, "multiclass"),  # fractional, though repeated
    ],
)
def test_targets_that_are_not_classes_name_task_regression(values: list, task: str | None) -> None:
    frame = pd.DataFrame({"x": np.arange(len(values)), "y": values})
    with pytest.raises(TabslimInputError, match=r"too many to be classes.*--task regression"):
        check_table(frame, "y", task, "t.csv")


def test_many_classes_with_rows_enough_are_still_classes() -> None:
    frame = pd.DataFrame({"x": np.arange(1000), "y": np.arange(1000) % 40})
    assert check_table(frame, "y", "classification", "t.csv") == "multiclass"
    halves = pd.DataFrame({"x": np.arange(100), "y": np.arange(100) % 4 + 0.5})
    assert check_table(halves, "y", "classification", "t.csv") == "multiclass"


def test_the_served_frame_of_many_classes_is_built_without_warnings() -> None:
    classes = list(range(400))
    probabilities = np.full((3, 400), 1 / 400, dtype=np.float32)
    decoded = {"prediction": np.array([0, 1, 2], dtype=object), "probabilities": probabilities}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = prediction_frame(decoded, classes)
    assert list(frame.columns) == ["prediction", *(f"proba_{c}" for c in classes)]
    assert frame["proba_399"].tolist() == pytest.approx([1 / 400] * 3)
