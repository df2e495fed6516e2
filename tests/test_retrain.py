"""`tabslim retrain` and `rollback` against a real MLflow registry (SQLite in a temp folder)."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lightning_modules.datasets import drift_batch
from search.commands import main, run_retrain
from search.serving import ACCEPTED_TAG, read_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A model trained on the reference process, and batches of new rows."""
    root = tmp_path_factory.mktemp("retrain")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    drift_batch("none", seed=0, n_rows=3000).to_csv(root / "reference.csv", index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--data", str(root / "reference.csv"), "--target", "churned",
                     "--tracking-uri", uri, "--max-epochs", "15"]) == 0  # fmt: skip
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)
    files = {"uri": uri, "model": model, "root": str(root)}
    for kind, seed in [("concept", 7), ("none", 8), ("covariate", 9), ("covariate", 10)]:
        batch = drift_batch(kind, seed=seed, n_rows=2000)
        batch["at"] = pd.date_range("2025-01-01", periods=len(batch), freq="h").astype(str)
        name = kind if kind not in files else f"{kind}-again"
        path = root / f"{name}.csv"
        batch.to_csv(path, index=False)
        files[name] = str(path)
    return files


@pytest.fixture
def champion(world: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A registered model of its own for each test, version 1 as champion."""
    name = re.sub(r"\W", "-", request.node.name)[:60]
    mlflow.set_tracking_uri(world["uri"])
    mlflow.set_registry_uri(world["uri"])
    version = mlflow.register_model(world["model"], name)
    MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return name


def _aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}


def _versions(name: str) -> int:
    return len(MlflowClient().search_model_versions(f"name = '{name}'"))


def test_concept_drift_promotes_a_challenger_once_and_rollback_moves_back(
    world: dict[str, str], champion: str
) -> None:
    outcome = run_retrain(
        champion, world["concept"], "churned", tracking_uri=world["uri"], time_column="at"
    )
    assert outcome.action == "promoted"
    assert any(r.startswith("realized accuracy") for r in outcome.reasons)
    assert _aliases(champion) == {"champion": "2", "previous": "1"}
    client = MlflowClient()
    tags = client.get_model_version(champion, "2").tags
    assert tags["tabslim.retrain_run"] == outcome.run_id
    assert "holdout_delta_ci_low" in tags["tabslim.gate"]
    # One parent run, a nested run per challenger, each with its paired holdout interval.
    children = client.search_runs(
        [client.get_run(outcome.run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.run_id}'",
    )
    assert sorted(r.info.run_name for r in children) == ["fine_tune", "scratch"]
    assert all(r.data.metrics["holdout_delta_ci_low"] > 0 for r in children)
    # The same command on the same data again: recognised, nothing retrained or promoted.
    again = run_retrain(
        champion, world["concept"], "churned", tracking_uri=world["uri"], time_column="at"
    )
    assert again.action == "already done" and _versions(champion) == 2
    assert main(["rollback", "--model", champion, "--tracking-uri", world["uri"]]) == 0
    assert _aliases(champion) == {"champion": "1", "previous": "2"}


def test_rows_like_the_training_data_need_no_retrain(world: dict[str, str], champion: str) -> None:
    outcome = run_retrain(champion, world["none"], "churned", tracking_uri=world["uri"])
    assert outcome.action == "no retrain"
    assert _versions(champion) == 1 and _aliases(champion) == {"champion": "1"}
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["tabslim.outcome"] == "no retrain"


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(
    world: dict[str, str], champion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient()
    before = client.search_runs([e.experiment_id for e in client.search_experiments()])
    code = main(["retrain", "--model", champion, "--data", world["concept"], "--target",
                 "churned", "--tracking-uri", world["uri"], "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "dry run: would retrain: realized accuracy" in out
    after = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(after) == len(before)
    assert _versions(champion) == 1
    assert not any(k.startswith("tabslim.retrain.") for k in client.get_registered_model(
        champion).tags)  # fmt: skip


def test_a_covariate_shift_the_labels_show_harmless_retrains_only_with_the_drift_trigger(
    world: dict[str, str], champion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The generator's covariate shift keeps the rule from features to target: the drift score
    # calls for a retrain, the realized metric does not. `inf` leaves the metric alone to decide.
    args = ["retrain", "--model", champion, "--data", world["covariate"], "--target", "churned",
            "--tracking-uri", world["uri"], "--dry-run"]  # fmt: skip
    assert main(args) == 0
    assert re.search(r"^dry run: would retrain: drift score [\d.]+ >= 0.1$",
                     capsys.readouterr().out, re.MULTILINE)  # fmt: skip
    assert main([*args, "--drift-threshold", "inf"]) == 0
    assert "dry run: no retrain needed: no drift or loss" in capsys.readouterr().out
    assert _versions(champion) == 1


def test_a_shift_the_champion_was_kept_on_becomes_its_drift_reference(
    world: dict[str, str], champion: str
) -> None:
    # A min gain no challenger can clear keeps the champion whatever the challengers learn.
    first = run_retrain(champion, world["covariate"], "churned", tracking_uri=world["uri"],
                        time_column="at", min_gain=0.2)  # fmt: skip
    assert first.action == "retrained, champion kept"
    assert [r.split(" ")[:2] for r in first.reasons] == [["drift", "score"]]
    client = MlflowClient()
    assert client.get_model_version(champion, "1").tags[ACCEPTED_TAG] == first.run_id
    accepted = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/accepted_profile.json")
    assert accepted["accepted_from_run"] == first.run_id
    # Its reference moved to the shifted rows: tenure's mean by about one standard deviation.
    reference = read_profile(_served_dir(champion), champion)
    shift = accepted["columns"]["tenure"]["mean"] - reference["columns"]["tenure"]["mean"]
    assert 0.7 < shift / reference["columns"]["tenure"]["std"] < 1.3
    assert accepted["validation"] == reference["validation"]
    # The same shift again: measured from the accepted rows, it calls for nothing.
    again = run_retrain(champion, world["covariate-again"], "churned",
                        tracking_uri=world["uri"], time_column="at")  # fmt: skip
    assert again.action == "no retrain"
    assert any(f"retrain run {first.run_id}" in line for line in again.lines)
    # Rows like the training data are now a shift from the reference; the labels still decide
    # nothing fell, and the drift score calls for a retrain (dry run: nothing written).
    back = run_retrain(champion, world["none"], "churned", tracking_uri=world["uri"],
                       dry_run=True)  # fmt: skip
    assert back.action == "dry run: would retrain"
    assert _aliases(champion) == {"champion": "1"} and _versions(champion) == 1


def _served_dir(name: str) -> Path:
    path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1"))
    return path / "artifacts" / "network"


@pytest.mark.slow
def test_two_retrains_started_at_once_promote_once(world: dict[str, str], champion: str) -> None:
    command = [sys.executable, "-m", "search", "retrain", "--model", champion, "--data",
               world["concept"], "--target", "churned", "--tracking-uri", world["uri"],
               "--force"]  # fmt: skip
    processes = [
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [e for _, e in outputs]
    actions = sorted(out.splitlines()[-3 if "MLflow run" in out else -2].split(":")[0]
                     for out, _ in outputs)  # fmt: skip
    assert actions.count("promoted") == 1, outputs
    assert set(actions) - {"promoted"} <= {"busy", "already done"}
    assert _versions(champion) == 2 and _aliases(champion)["champion"] == "2"


def _one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_bad_retrain_input_is_one_line_and_leaves_the_registry_alone(
    world: dict[str, str], champion: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.read_csv(world["concept"])
    files = {
        "lacking": frame.drop(columns=["usage"]),
        "few": frame.head(40),
        "badtime": frame.assign(at="soon"),
    }
    for stem, table in files.items():
        table.to_csv(tmp_path / f"{stem}.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    base = ["retrain", "--tracking-uri", world["uri"], "--target", "churned", "--model"]
    cases = [
        ([champion, "--data", str(tmp_path / "lacking.csv")], "lacks the columns ['usage']"),
        ([champion, "--data", str(tmp_path / "few.csv")], "too few for a holdout"),
        ([champion, "--data", str(tmp_path / "badtime.csv"), "--time-column", "at"],
         "time column 'at' cannot be parsed"),
        ([champion, "--data", str(tmp_path / "empty.csv")], "is empty"),
        (["nope", "--data", world["concept"]], "no registered model 'nope'"),
    ]  # fmt: skip
    for args, message in cases:
        assert message in _one_line([*base, *args], capsys), args
    no_target = _one_line(
        ["retrain", "--tracking-uri", world["uri"], "--model", champion, "--data",
         world["concept"], "--target", "left"], capsys,
    )  # fmt: skip
    assert "no target column 'left'" in no_target
    assert "--holdout must be in [0.05, 0.8]" in _one_line(
        [*base, champion, "--data", world["concept"], "--holdout", "0.95"], capsys
    )
    for flag, value in (("--reference-share", "1.5"), ("--search", "-1")):
        assert "--reference-share must be in [0, 1] and --search in [0, 200]" in _one_line(
            [*base, champion, "--data", world["concept"], flag, value], capsys
        ), flag
    assert "nothing to roll back" in _one_line(
        ["rollback", "--model", champion, "--tracking-uri", world["uri"]], capsys
    )
    MlflowClient().delete_registered_model_alias(champion, "champion")
    assert "has no version with the alias 'champion'" in _one_line(
        [*base, champion, "--data", world["concept"]], capsys
    )
    assert _versions(champion) == 1


def test_without_the_flag_the_store_is_the_configs(
    world: dict[str, str], champion: str, tmp_path: Path
) -> None:
    config = tmp_path / "team.yaml"
    config.write_text(f"tracking:\n  uri: {world['uri']}\n")
    outcome = run_retrain(champion, world["none"], "churned", config_path=str(config))
    # It found the champion in the config's store (the default store has no such model).
    assert outcome.action == "no retrain" and outcome.champion == "1"


def test_a_search_challenger_and_the_champions_own_rows_in_the_window(
    world: dict[str, str], champion: str
) -> None:
    # The champion carries a seeded sample of its training rows, target included.
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{champion}@champion"))
    stored = pd.read_parquet(next(files.rglob("reference_rows.parquet")))
    reference = pd.read_csv(Path(world["root"]) / "reference.csv")
    # Up to 2,000 of them: here all 1,650 of the 55% of 3,000 rows that trained.
    assert len(stored) == 1650 and set(stored.columns) == set(reference.columns)
    outcome = run_retrain(
        champion, world["concept"], "churned", tracking_uri=world["uri"], time_column="at",
        reference_share=0.5, search_trials=3,
    )  # fmt: skip
    assert outcome.action in ("promoted", "retrained, champion kept")
    assert any(line.startswith("search ") for line in outcome.lines), outcome.lines
    client = MlflowClient()
    children = client.search_runs(
        [client.get_run(outcome.run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.run_id}'",
    )
    assert {r.info.run_name for r in children} == {"scratch", "fine_tune", "search"}
    # The window: 70% of 2000 new rows, and half the 1650 stored rows before them.
    if outcome.action == "promoted":
        tags = client.get_model_version(champion, outcome.champion).tags
        assert tags["tabslim.window_rows"] == str(1400 + 825)


def test_a_champion_logged_without_rows_cannot_take_a_reference_share(
    world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "no_rows.yaml"
    config.write_text("tracking:\n  reference_rows: 0\ntraining:\n  max_epochs: 2\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = io.StringIO()
    table = str(Path(world["root"]) / "reference.csv")
    with contextlib.redirect_stdout(out):
        assert main(["train", "--config", str(config), "--data", table, "--target", "churned",
                     "--tracking-uri", uri]) == 0  # fmt: skip
    (model,) = re.findall(r"^model: (\S+)", out.getvalue(), re.MULTILINE)
    mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(model, "bare")
    MlflowClient().set_registered_model_alias("bare", "champion", version.version)
    capsys.readouterr()
    code = main(["retrain", "--model", "bare", "--data", world["concept"], "--target", "churned",
                 "--tracking-uri", uri, "--reference-share", "0.3", "--force"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "logged without them" in err[0], err
    assert len(MlflowClient().search_model_versions("name = 'bare'")) == 1


def _late(world: dict[str, str], pending: pd.DataFrame, labelled: int, path: Path) -> str:
    """Rows of the reference process with their labels, then `pending` without them yet."""
    known = pd.read_csv(world["none"]).drop(columns=["at"]).head(labelled)
    frame = pd.concat([known, pending.assign(churned=None)], ignore_index=True)
    frame["at"] = pd.date_range("2025-03-01", periods=len(frame), freq="h").astype(str)
    frame.to_csv(path, index=False)
    return str(path)


def _unsure_rows(n_rows: int) -> pd.DataFrame:
    """Rows of the reference process near its decision boundary: a covariate shift (chosen on
    the features alone) that hurts, as the model is unsure there."""
    rows = drift_batch("none", seed=11, n_rows=40 * n_rows)
    effect = rows["plan"].map({"basic": 0.5, "plus": 0.0, "premium": -0.5})
    logit = 1.5 * rows["tenure"] - rows["usage"] + 0.7 * rows["support"] + effect
    return rows[logit.abs() < 0.4].head(n_rows).reset_index(drop=True)


def test_without_labels_a_harmless_covariate_shift_needs_no_retrain(
    world: dict[str, str], champion: str, tmp_path: Path
) -> None:
    shifted = pd.read_csv(world["covariate"]).drop(columns=["at"])
    path = _late(world, shifted, 600, tmp_path / "late.csv")
    outcome = run_retrain(champion, path, "churned", tracking_uri=world["uri"],
                          time_column="at", drift_threshold=float("inf"))  # fmt: skip
    assert outcome.action == "no retrain", outcome.reasons
    estimate = next(line for line in outcome.lines if line.startswith("estimated accuracy"))
    assert "(CBPE) on 2,000 unlabelled rows" in estimate, estimate
    assert _versions(champion) == 1


def test_without_labels_a_shift_that_hurts_retrains_on_the_labelled_rows(
    world: dict[str, str], champion: str, tmp_path: Path
) -> None:
    path = _late(world, _unsure_rows(1200), 800, tmp_path / "late.csv")
    outcome = run_retrain(champion, path, "churned", tracking_uri=world["uri"],
                          time_column="at", drift_threshold=float("inf"))  # fmt: skip
    assert outcome.action in ("promoted", "retrained, champion kept"), outcome
    (reason,) = outcome.reasons
    assert reason.startswith("estimated accuracy (CBPE)"), reason
    evidence = next(line for line in outcome.lines if line.startswith("challengers trained on"))
    assert "560 labelled rows" in evidence and "240 labelled rows of the holdout" in evidence
    assert "1200 rows without labels yet were judged by its CBPE estimate" in evidence
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["tabslim.unlabelled_rows"] == "1200"
    assert run.data.tags["tabslim.evidence"] == evidence
    if outcome.action == "promoted":
        tags = MlflowClient().get_model_version(champion, outcome.champion).tags
        assert tags["tabslim.reason"] == reason and tags["tabslim.evidence"] == evidence
    # The estimate called for it, so the champion's drift reference stays its training data.
    assert ACCEPTED_TAG not in MlflowClient().get_model_version(champion, "1").tags


def test_without_enough_labels_a_needed_retrain_waits_for_them(
    world: dict[str, str], champion: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _late(world, _unsure_rows(600), 0, tmp_path / "late.csv")
    code = main(["retrain", "--model", champion, "--data", path, "--target", "churned",
                 "--tracking-uri", world["uri"], "--drift-threshold", "inf"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "retrain needed, too few labels: estimated accuracy (CBPE)" in out
    assert "0 labelled rows are too few for a holdout" in out
    assert _versions(champion) == 1
    # Not taken for handled: the same rows once labelled are judged again.
    assert not any(k.startswith("tabslim.retrain.") for k in MlflowClient().get_registered_model(
        champion).tags)  # fmt: skip
