"""`tabslim drift` on a seeded churn-like process: quiet without drift, loud with it."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lightning_modules.data import TabularDataModule
from lightning_modules.datasets import drift_batch
from lightning_modules.networks import MLPSpec, build
from search.commands import main, run_drift
from search.serving import log_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A model trained on the reference process, registered as churn@champion."""
    root = tmp_path_factory.mktemp("drift")
    reference = root / "reference.csv"
    # With an identifier, as real tables have: left out of the features, and recorded as such.
    table = drift_batch("none", seed=0, n_rows=3000)
    table.insert(0, "customer_id", [f"cust-{i:06d}" for i in range(len(table))])
    table.to_csv(reference, index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["train", "--data", str(reference), "--target", "churned", "--tracking-uri", uri,
             "--max-epochs", "15"]
        )  # fmt: skip
    assert code == 0
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = mlflow.register_model(model, "churn")
    MlflowClient().set_registered_model_alias("churn", "champion", version.version)
    batches = {}
    for kind, seed in [("none", 1), ("none", 2), ("none", 3), ("none", 4), ("none", 5),
                       ("covariate", 6), ("concept", 7)]:  # fmt: skip
        path = root / f"{kind}-{seed}.csv"
        drift_batch(kind, seed=seed, n_rows=2000).to_csv(path, index=False)
        batches[f"{kind}-{seed}"] = str(path)
    return {"uri": uri, "model": model, "root": str(root), **batches}


def test_batches_without_drift_raise_no_alarm(trained: dict[str, str]) -> None:
    alarms = 0
    for seed in range(1, 6):
        report = run_drift(trained["model"], trained[f"none-{seed}"], tracking_uri=trained["uri"])
        alarms += len(report.report.drifted)
        assert report.report.score < 0.05
    # Five columns in each of five batches: no column may cry wolf.
    assert alarms == 0


def test_a_covariate_shift_is_found_in_the_columns_that_moved(trained: dict[str, str]) -> None:
    report = run_drift(trained["model"], trained["covariate-6"], tracking_uri=trained["uri"]).report
    assert {c.column for c in report.drifted} == {"tenure", "plan"}
    assert report.columns[0].column in {"tenure", "plan"}  # worst first
    assert report.prediction_psi > 0.1
    importance = {c.column: c.importance for c in report.columns}
    # The model learned that tenure matters and noise does not.
    assert importance["tenure"] > 10 * max(importance["noise"], 1e-4)


def test_concept_drift_shows_in_the_realized_metric_not_the_columns(
    trained: dict[str, str],
) -> None:
    report = run_drift(trained["model"], trained["concept-7"], tracking_uri=trained["uri"]).report
    assert report.drifted == []
    realized = report.realized
    assert realized is not None and realized.metric == "accuracy"
    assert realized.low <= realized.value <= realized.high
    # The interval lies well below what the model scored on its validation rows.
    assert realized.high < realized.reference - 0.1


def test_the_run_holds_the_report_and_links_to_the_model_version(
    trained: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["drift", "--model", "models:/churn@champion", "--data", trained["covariate-6"],
         "--tracking-uri", trained["uri"]]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    # The data-quality section first, then the drift table, worst column first.
    assert lines[0].split()[:2] == ["column", "type"] and "data quality: no broken column" in out
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["column", "kind"])
    assert lines[header + 1].split()[0] in {"tenure", "plan"}
    assert "2 of 5 columns drifted" in out
    assert "not features, so not compared: customer_id" in out
    (run_id,) = re.findall(r"MLflow run (\w+)", out)
    client = MlflowClient(trained["uri"])
    run = client.get_run(run_id)
    assert run.data.tags["tabslim.kind"] == "drift"
    assert run.data.tags["tabslim.model_name"] == "churn"
    assert run.data.metrics["drift_psi_tenure"] > 0.2
    assert {a.path for a in client.list_artifacts(run_id)} >= {
        "drift_report.json", "drift_report.html", "drift.png",
    }  # fmt: skip
    stored = json.loads(Path(client.download_artifacts(run_id, "drift_report.json")).read_text())
    assert "identifier" in stored["dropped_columns"]["customer_id"]
    version = client.get_model_version_by_alias("churn", "champion")
    assert version.tags["tabslim.last_drift_run"] == run_id


def test_the_stored_training_rows_give_a_multivariate_verdict(trained: dict[str, str]) -> None:
    quiet = run_drift(trained["model"], trained["none-1"], tracking_uri=trained["uri"]).report
    assert quiet.multivariate is not None and not quiet.multivariate.drifted
    outcome = run_drift(trained["model"], trained["covariate-6"], tracking_uri=trained["uri"])
    found = outcome.report.multivariate
    # `tabslim train` stores up to 2,000 training rows (here all 1,650 of the 55% that train):
    # both sides hold that many.
    assert found is not None and found.drifted
    assert found.reference_rows == found.new_rows == 1650
    assert found.top_columns[0][0] in {"tenure", "plan"}
    assert any(line.startswith("multivariate (") for line in outcome.report.summary())
    metrics = MlflowClient(trained["uri"]).get_run(outcome.run_id).data.metrics
    assert metrics["drift_c2st_auc_ci_low"] <= metrics["drift_c2st_auc"] == found.auc
    assert metrics["drift_c2st_auc_ci_low"] > found.threshold


def _one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_bad_drift_input_is_one_line(
    trained: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["drift", "--tracking-uri", trained["uri"], "--model"]
    lacking = tmp_path / "lacking.csv"
    drift_batch("none", seed=9, n_rows=50).drop(columns=["plan", "usage"]).to_csv(lacking)
    line = _one_line([*base, trained["model"], "--data", str(lacking)], capsys)
    assert "lacks the columns ['usage', 'plan']" in line
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _one_line([*base, trained["model"], "--data", str(empty)], capsys)
    bad = _one_line([*base, trained["model"], "--data", str(lacking), "--alpha", "1.5"], capsys)
    assert "--psi-threshold must be above 0 and --alpha in (0, 1)" in bad
    unknown = _one_line([*base, "models:/nope@champion", "--data", str(lacking)], capsys)
    assert unknown.startswith("tabslim: error: no model models:/nope@champion")


def test_a_model_logged_without_a_profile_says_what_to_do(
    trained: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    frame = drift_batch("none", seed=0, n_rows=200)
    data = TabularDataModule.from_frame(frame, "churned")
    network = build(MLPSpec(hidden=(8,), **data.network_inputs()), seed=0)
    mlflow.set_tracking_uri(trained["uri"])
    with mlflow.start_run():
        info = log_model(network.spec, network, data.preprocessor, data.example_rows())
    capsys.readouterr()  # MLflow's own lines while logging
    line = _one_line(
        ["drift", "--model", info.model_uri, "--data", trained["none-1"], "--tracking-uri",
         trained["uri"]], capsys,
    )  # fmt: skip
    assert "has no reference profile" in line and "train or search again" in line
