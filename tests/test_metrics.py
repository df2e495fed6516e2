from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from lightning_modules.metrics import (
    HIGHER_IS_BETTER,
    correct_rows,
    metric_of_rows,
    row_scores,
)
from lightning_modules.task import Task


@pytest.mark.parametrize(
    ("task", "metric"),
    [("binary", "accuracy"), ("multiclass", "accuracy"), ("regression", "rmse"),
     ("anomaly", "pr_auc")],
)  # fmt: skip
def test_every_task_is_judged_on_its_primary_metric(task: str, metric: str) -> None:
    assert Task(task).metric == metric
    assert Task(task).higher_is_better == HIGHER_IS_BETTER[metric]
    assert Task(task) == task  # compares as the config's name


def test_classes_compare_as_strings_as_profiles_store_them() -> None:
    rows = correct_rows(np.array([3, 1, 2]), pd.Series(["3", "2", "2"]))
    assert rows.tolist() == [1.0, 0.0, 1.0]
    assert metric_of_rows("accuracy", rows) == pytest.approx(2 / 3)


def test_regression_rows_are_squared_errors_and_rmse_their_root_mean() -> None:
    rows = row_scores("regression", np.array([1.0, 4.0]), pd.Series([2.0, 2.0]))
    assert rows.tolist() == [1.0, 4.0]
    assert metric_of_rows("rmse", rows) == pytest.approx(np.sqrt(2.5))


def test_anomaly_rows_pair_each_score_with_its_label() -> None:
    scores = np.array([0.9, 0.2, 0.7, 0.1])
    actual = pd.Series(["fraud", "ok", "ok", "fraud"])
    rows = row_scores(Task.ANOMALY, scores, actual, positive="fraud")
    assert rows.tolist() == [[0.9, 1.0], [0.2, 0.0], [0.7, 0.0], [0.1, 1.0]]
    assert metric_of_rows("pr_auc", rows) == pytest.approx(
        average_precision_score([1, 0, 0, 1], scores)
    )


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="clustering"):
        row_scores("clustering", [1], [1])
