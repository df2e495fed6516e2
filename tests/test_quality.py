"""Data that does not fit the model: `drift` names broken columns, `retrain` refuses them, and
the served model refuses text in a numeric column (a real MLflow store in a temp folder)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lightning_modules.datasets import drift_batch
from search.commands import main, run_drift
from search.monitor import Estimated, check_quality, compare, screen_estimate
from search.serving import read_profile

_NAME = "quality"


def _batch(seed: int, n_rows: int = 600) -> pd.DataFrame:
    """The reference process, with a whole-number column, a constant one, and 2% gaps in usage."""
    frame = drift_batch("none", seed=seed, n_rows=n_rows)
    rng = np.random.default_rng(seed)
    frame["tickets"] = rng.poisson(2.0, len(frame))
    frame["version"] = 1.5
    frame.loc[rng.random(len(frame)) < 0.02, "usage"] = np.nan
    return frame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A model trained on `_batch`, registered as quality@champion, and batches of new rows
    without their labels, as a feed sends them."""
    root = tmp_path_factory.mktemp("quality")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _batch(0, 1500).to_csv(root / "reference.csv", index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--data", str(root / "reference.csv"), "--target", "churned",
                     "--tracking-uri", uri, "--max-epochs", "3"]) == 0  # fmt: skip
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = mlflow.register_model(model, _NAME)
    MlflowClient().set_registered_model_alias(_NAME, "champion", version.version)
    rng = np.random.default_rng(5)
    clean = _batch(1)
    batches = {
        "clean": clean,
        "text": clean.assign(tenure="abc"),
        "empty": clean.assign(tenure=np.nan),
        "mild": clean.assign(usage=clean["usage"].mask(rng.random(len(clean)) < 0.10)),
        "unseen": clean.assign(plan=clean["plan"].mask(rng.random(len(clean)) < 0.2, "gold")),
    }
    files = {"uri": uri, "model": model, "root": str(root)}
    for name, frame in batches.items():
        frame.drop(columns=["churned"]).to_csv(root / f"{name}.csv", index=False)
        # With labels, for retrain.
        frame.to_csv(root / f"{name}-labelled.csv", index=False)
        files[name] = str(root / f"{name}.csv")
        files[f"{name}-labelled"] = str(root / f"{name}-labelled.csv")
    return files


def _profile(world: dict[str, str]) -> dict:
    local = Path(mlflow.artifacts.download_artifacts(world["model"]))
    return read_profile(local / "artifacts" / "network", world["model"])


def test_text_in_a_numeric_column_is_broken_and_not_called_no_drift(
    world: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["drift", "--model", world["model"], "--data", world["text"], "--tracking-uri",
                 world["uri"]])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    # The data-quality section comes first, broken column on top, then the drift table.
    assert lines[0].split()[:2] == ["column", "type"]
    assert lines[1].split()[0] == "tenure" and lines[1].endswith("BROKEN")
    quality_verdict = next(i for i, line in enumerate(lines) if line.startswith("data quality:"))
    assert (
        "tenure: 100% of its values do not parse as float64, e.g. 'abc'" in lines[quality_verdict]
    )
    drift_header = next(
        i for i, line in enumerate(lines) if line.startswith("column  ") and "PSI" in line
    )
    assert drift_header > quality_verdict
    tenure = next(line for line in lines[drift_header:] if line.startswith("tenure "))
    assert tenure.split()[-1] == "BROKEN"
    verdict = "0 of 5 tested columns drifted (PSI >= 0.2 and corrected p < 0.05); BROKEN, so"
    assert f"{verdict} neither drifted nor stable: tenure;" in out
    assert "estimate withheld: 600 of the 600 unlabelled rows" in out
    assert not re.search(r"^estimated accuracy", out, re.MULTILINE)
    (run_id,) = re.findall(r"MLflow run (\w+)", out)
    client = MlflowClient(world["uri"])
    metrics = client.get_run(run_id).data.metrics
    assert metrics["quality_unparseable_tenure"] == 1.0
    assert metrics["quality_broken_tenure"] == 1.0 and metrics["quality_broken_columns"] == 1.0
    # No PSI is logged for a column whose values were not compared.
    assert "drift_psi_tenure" not in metrics and "drift_psi_usage" in metrics
    table = json.loads(Path(client.download_artifacts(run_id, "data_quality.json")).read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["column"] == "tenure" and "do not parse" in row["broken"]
    page = Path(client.download_artifacts(run_id, "drift_report.html")).read_text()
    assert "<h2>Data quality</h2>" in page and "do not parse as float64" in page


def test_a_column_missing_in_every_row_is_broken(world: dict[str, str]) -> None:
    report = run_drift(world["model"], world["empty"], tracking_uri=world["uri"]).report
    assert report.quality is not None
    assert [c.column for c in report.quality.broken] == ["tenure"]
    (problem,) = [c.problem for c in report.quality.broken]
    assert problem == "100% of its values are missing, against 0% missing in training"
    (tenure,) = [c for c in report.columns if c.column == "tenure"]
    # Not "no drift", and no statistic of imputed (or absent) values.
    assert tenure.broken and not tenure.drifted and tenure.verdict == "BROKEN"
    assert math.isnan(tenure.p_adjusted) and math.isnan(tenure.psi)
    assert report.estimated is None and report.estimated_note.startswith("estimate withheld")


def test_a_mild_rise_in_missing_values_is_reported_but_not_broken(world: dict[str, str]) -> None:
    report = run_drift(world["model"], world["mild"], tracking_uri=world["uri"]).report
    assert report.quality is not None and report.quality.broken == []
    (usage,) = [c for c in report.quality.columns if c.column == "usage"]
    assert 0.07 < usage.missing < 0.14 and 0.005 < usage.training_missing < 0.04
    assert report.estimated is not None and report.estimated.broken_rows == 0
    rows = pd.read_csv(world["mild"])
    served = mlflow.pyfunc.load_model(world["model"]).predict(rows)
    assert len(served) == len(rows) and served["proba_yes"].notna().all()


def test_unseen_categories_are_counted(world: dict[str, str]) -> None:
    report = run_drift(world["model"], world["unseen"], tracking_uri=world["uri"]).report
    assert report.quality is not None
    (plan,) = [c for c in report.quality.columns if c.column == "plan"]
    assert 0.15 < plan.unseen < 0.25 and not plan.broken
    assert "quality_unseen_plan" in report.quality.metrics()


def test_a_clean_batch_reports_no_broken_column(world: dict[str, str]) -> None:
    report = run_drift(world["model"], world["clean"], tracking_uri=world["uri"]).report
    assert report.quality is not None and report.quality.broken == []
    assert report.quality.verdict().startswith("data quality: no broken column")
    assert report.estimated is not None
    assert all(c.unparseable == 0.0 for c in report.quality.columns)


def test_verdicts_follow_the_stated_rule_and_an_untestable_column_says_so(
    world: dict[str, str],
) -> None:
    profile = _profile(world)
    frame = drift_batch("covariate", seed=3, n_rows=600).assign(tickets=3, version=1.5)
    report = compare(profile, frame, quality=check_quality(profile, frame))
    assert report.drifted, "the covariate shift moves tenure and plan"
    for c in report.columns:
        if c.tested:
            rule = c.p_adjusted < report.alpha and c.psi >= report.psi_threshold
            assert c.drifted == rule, c
    (version,) = [c for c in report.columns if c.column == "version"]
    # A constant column has no distribution to test: no p = 1, and a note instead.
    assert version.note == "constant in training" and math.isnan(version.p_adjusted)
    assert version.verdict == "-" and "version (constant in training)" in report.format_table()
    # Values beyond a constant's range still show in the data-quality section.
    shifted = check_quality(profile, frame.assign(version=2.5))
    assert next(c for c in shifted.columns if c.column == "version").outside == 1.0


def test_a_profile_logged_before_the_training_types_still_checks(world: dict[str, str]) -> None:
    profile = _profile(world)
    for reference in profile["columns"].values():
        reference.pop("dtype")
    text = pd.read_csv(world["text"])
    quality = check_quality(profile, text)
    assert [(c.column, c.expected) for c in quality.broken] == [("tenure", "numeric")]
    clean = check_quality(profile, pd.read_csv(world["clean"]))
    assert clean.broken == []


def test_a_fraction_in_a_whole_number_column_does_not_parse(world: dict[str, str]) -> None:
    profile = _profile(world)
    assert profile["columns"]["tickets"]["dtype"] == "int64"
    rows = pd.read_csv(world["clean"]).assign(tickets=2.5)
    (broken,) = check_quality(profile, rows).broken
    assert broken.column == "tickets" and "do not parse as int64, e.g. '2.5'" in str(broken.problem)


def _one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("text-labelled", "column 'tenure': 100% of its values do not parse as float64"),
        ("empty-labelled", "column 'tenure': 100% of its values are missing"),
    ],
)
def test_retrain_refuses_a_broken_column_in_one_line(
    world: dict[str, str], capsys: pytest.CaptureFixture[str], batch: str, message: str
) -> None:
    client = MlflowClient(world["uri"])
    runs = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    line = _one_line(["retrain", "--model", _NAME, "--data", world[batch], "--target", "churned",
                      "--tracking-uri", world["uri"], "--force"], capsys)  # fmt: skip
    assert message in line and "nothing was retrained" in line
    # Nothing trained, promoted or marked as handled.
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs
    model = client.get_registered_model(_NAME)
    assert len(client.search_model_versions(f"name = '{_NAME}'")) == 1
    assert not any(key.startswith("tabslim.retrain.") for key in model.tags)


def test_the_served_model_refuses_text_by_column_and_imputes_a_missing_one(
    world: dict[str, str],
) -> None:
    model = mlflow.pyfunc.load_model(world["model"])
    inputs = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert inputs == {
        "tenure": "double", "usage": "double", "support": "double", "noise": "double",
        "tickets": "long", "version": "double", "plan": "string",
    }  # fmt: skip
    with pytest.raises(MlflowException, match=r"column tenure\. Can not safely convert str"):
        model.predict(pd.read_csv(world["text"]))
    # One served row cannot tell a broken feed from a gap: it scores as trained, by imputation.
    empty = model.predict(pd.read_csv(world["empty"]))
    assert len(empty) == 600 and empty["proba_yes"].between(0, 1).all()


def test_the_estimate_counts_its_rows_with_broken_columns_and_is_withheld_when_most_have_them(
    world: dict[str, str],
) -> None:
    profile = _profile(world)
    # Labelled rows carry the breakage: of the 400 unlabelled ones, a quarter has text.
    rows = pd.read_csv(world["clean"]).head(800)
    rows["tenure"] = rows["tenure"].astype(object)
    rows.loc[:499, "tenure"] = "abc"
    quality = check_quality(profile, rows)
    assert [c.column for c in quality.broken] == ["tenure"]
    unlabelled = np.arange(len(rows)) >= 400
    estimate = Estimated("accuracy", 0.8, 0.7, 0.9, 0.8, "CBPE", 400)
    kept, note = screen_estimate(quality, estimate, unlabelled)
    assert note is None and kept is not None and kept.broken_rows == 100
    assert "100 of them had a broken column (tenure), scored on imputed values" in kept.describe()
    withheld, note = screen_estimate(quality, estimate, np.arange(len(rows)) < 400)
    assert withheld is None and note is not None
    assert note.startswith("estimate withheld: 400 of the 400 unlabelled rows")
