"""Drift and retraining on a real, time-ordered table that a wheel ships: Seattle's daily
weather 2012-2015 (vega_datasets). Its labels drift for real: rain days of 2012 are mostly
labelled fog or sun from 2014 on, so a model of 2012-2013 falls apart on 2014."""

from __future__ import annotations

import contextlib
import io
import re
from importlib import resources
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from search.commands import main, run_drift, run_retrain


@pytest.fixture(scope="module")
def years(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    table = pd.read_csv(resources.files("vega_datasets") / "_data" / "seattle-weather.csv")
    root = tmp_path_factory.mktemp("seattle")
    files = {"uri": f"sqlite:///{root / 'mlflow.db'}"}
    for name, rows in {
        "2012-13": table[table["date"] < "2014"],
        "2014": table[(table["date"] >= "2014") & (table["date"] < "2015")],
        "2015": table[table["date"] >= "2015"],
    }.items():
        files[name] = str(root / f"{name}.csv")
        rows.to_csv(files[name], index=False)
    return files


@pytest.mark.slow
def test_a_model_of_2012_13_is_retrained_on_2014_and_does_better_on_2015(
    years: dict[str, str],
) -> None:
    uri = years["uri"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(
                [
                    "train",
                    "--data",
                    years["2012-13"],
                    "--target",
                    "weather",
                    "--time-column",
                    "date",
                    "--tracking-uri",
                    uri,
                    "--max-epochs",
                    "30",
                ]
            )
            == 0
        )
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)  # fmt: skip
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = mlflow.register_model(model, "seattle")
    MlflowClient().set_registered_model_alias("seattle", "champion", version.version)

    report = run_drift("models:/seattle@champion", years["2014"], tracking_uri=uri).report
    # The date orders the split; it is not a feature, and not compared.
    assert report.dropped == {"date": "it is the time column, which orders the split"}
    assert report.realized is not None
    assert report.realized.high < report.realized.reference - 0.1
    before = run_drift("models:/seattle@champion", years["2015"], tracking_uri=uri).report

    outcome = run_retrain("seattle", years["2014"], "weather", tracking_uri=uri,
                          time_column="date")  # fmt: skip
    assert outcome.action == "promoted", outcome.lines
    after = run_drift("models:/seattle@champion", years["2015"], tracking_uri=uri).report
    assert before.realized is not None and after.realized is not None
    # Judged on a year neither model saw: the promoted one is better, beyond both intervals.
    assert after.realized.low > before.realized.high
    assert Path(mlflow.artifacts.download_artifacts("models:/seattle@previous")).is_dir()
    # 2015 has drizzle, which 2014 (the new champion's window) never had: the fine-tuned
    # challenger cannot learn a class its outputs lack, so only the scratch one competes.
    forced = run_retrain("seattle", years["2015"], "weather", tracking_uri=uri,
                         time_column="date", force=True)  # fmt: skip
    assert forced.action in {"promoted", "retrained, champion kept"}
    assert any("fine_tune skipped" in line and "drizzle" in line for line in forced.lines)
