"""The task as a type: parsed from its stored name, and written back as that name."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest

from lightning_modules.data import TabularDataModule
from lightning_modules.metrics import HIGHER_IS_BETTER
from lightning_modules.preprocessing import Preprocessor
from lightning_modules.task import Task
from search.config.choices import TASK_CHOICES
from search.study import StudySettings


@pytest.mark.parametrize("task", list(Task))
def test_a_task_reads_and_writes_as_its_name(task: Task) -> None:
    assert Task(task.value) is task
    assert str(task) == f"{task}" == task.value
    assert json.dumps({"task": task}) == json.dumps({"task": task.value})


@pytest.mark.parametrize("task", list(Task))
def test_the_properties_agree(task: Task) -> None:
    kinds = [task.is_classification, task.is_regression, task.is_anomaly]
    assert sum(kinds) == 1
    assert task.higher_is_better == HIGHER_IS_BETTER[task.metric]
    assert task.scored_output == ("anomaly_score" if task.is_anomaly else "prediction")


def test_the_config_accepts_every_task_and_two_names_more() -> None:
    assert set(TASK_CHOICES) == {"auto", "classification", *(t.value for t in Task)}


def test_a_stored_preprocessor_keeps_the_name(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", task="classification")
    assert data.task is Task.BINARY and data.preprocessor.task is Task.BINARY
    stored = json.loads(json.dumps(data.preprocessor.to_dict()))
    assert stored["task"] == "binary" and type(data.preprocessor.to_dict()["task"]) is str
    assert Preprocessor.from_dict(stored).task is Task.BINARY


def test_study_settings_store_the_name_and_read_a_stored_one() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    StudySettings(task=Task.REGRESSION, metric="rmse").write(study)
    assert study.user_attrs["tabslim"]["task"] == "regression"
    assert type(study.user_attrs["tabslim"]["task"]) is str
    assert StudySettings.read(study).task is Task.REGRESSION
    # Settings stored without a task held "" (and may lack the key altogether).
    study.set_user_attr("tabslim", {"task": "", "metric": "rmse"})
    assert StudySettings.read(study).task is None
    StudySettings().write(study)
    assert study.user_attrs["tabslim"]["task"] == ""
