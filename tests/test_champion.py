from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import FloatDistribution

from search.commands import main
from search.front import candidates, champion, study_text
from search.study import StudySettings, directions

optuna.logging.set_verbosity(optuna.logging.WARNING)
SETTINGS = StudySettings(
    task="multiclass",
    metric="accuracy",
    higher_is_better=True,
    latency="latency_onnxruntime_b1024_median_ms",
    max_metric_drop=0.005,
    baseline_trial=0,
    baseline_metric=0.97,
)


def _study(trials: list[tuple[float, float, tuple[float, float]]]) -> optuna.Study:
    """Baseline first, then (metric, parameters, (delta low, delta high)) per trial."""
    study = optuna.create_study(directions=directions(True))
    SETTINGS.write(study)
    rows = [(0.97, 1000.0, (0.0, 0.0)), *trials]
    for number, (metric, size, (low, high)) in enumerate(rows):
        study.add_trial(
            optuna.trial.create_trial(
                values=[metric, size, 1.0],
                params={"width_scale": size / 1000},
                distributions={"width_scale": FloatDistribution(0.001, 1.0)},
                user_attrs={
                    "approach": "scratch",
                    "baseline": number == 0,
                    "hidden": [int(size)],
                    "metrics": {
                        "parameters": size,
                        "val_delta_ci_low": low,
                        "val_delta_ci_high": high,
                    },
                },
                constraints={"metric_floor": SETTINGS.violation(metric)},
            )
        )
    return study


def test_confident_picks_the_smallest_trial_whose_interval_clears_the_floor() -> None:
    study = _study(
        [
            (0.968, 100.0, (-0.02, 0.015)),  # feasible, but its interval crosses the floor
            (0.975, 300.0, (-0.004, 0.014)),  # clears it
            (0.980, 500.0, (-0.001, 0.02)),  # clears it too, but larger
            (0.990, 1000.0, (0.01, 0.03)),  # clears it, but as large as the baseline
        ]
    )
    assert champion(study, "smallest").trial.number == 1  # type: ignore[union-attr]
    chosen = champion(study, "confident")
    assert chosen.trial is not None and chosen.trial.number == 2
    assert "95% interval on the validation rows (which also selected it: optimistic)" in (
        chosen.note
    )


def test_confident_picks_the_baseline_when_no_trial_qualifies_and_says_so() -> None:
    study = _study([(0.968, 100.0, (-0.02, 0.015)), (0.971, 300.0, (-0.011, 0.013))])
    chosen = champion(study)  # the study's rule, confident by default
    assert chosen.trial is not None and chosen.trial.number == 0
    assert "champion is the baseline" in chosen.note
    text = study_text(study)
    assert "champion (confident): trial 0" in text
    # Half-widths 0.0175 and 0.012 against a floor of 0.005: the rows cannot resolve it.
    assert "+/-0.0148" in text and "too small to resolve the floor" in text


def _assert_failed_without_champion(uri: str) -> None:
    """The study's parent run says FAILED, and nothing was registered."""
    mlflow.set_tracking_uri(uri)
    assert mlflow.MlflowClient().search_registered_models() == []
    (parent,) = mlflow.search_runs(
        experiment_names=["tabslim"],
        filter_string="tags.`tabslim.kind` = 'study'",
        output_format="list",
    )
    assert parent.info.status == "FAILED"


def test_a_baseline_that_did_not_learn_stops_the_search_and_registers_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    # As a new user found it: digits at lr 10000 scores 0.10, which is chance.
    config["training"]["lr"] = 10000.0
    config["data"]["dataset"] = "digits"
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    code = main(
        ["search", "--config", str(path), "--tracking-uri", uri, "--quiet",
         "--storage", str(tmp_path / "j.journal"), "--study", "diverged"]
    )  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # digits has constant pixel columns, noted before training; then one line of error.
    err = [line for line in lines if not line.startswith("tabslim: note: ")]
    assert all("a single value" in line for line in lines if line not in err)
    assert len(err) == 1 and err[0].startswith("tabslim: error: the baseline did")
    assert "training.lr 10000" in err[0]
    _assert_failed_without_champion(uri)
    # The report says why the search stopped, rather than naming a champion.
    assert main(["report", "--study", "diverged", "--storage", str(tmp_path / "j.journal")]) == 0
    out = capsys.readouterr().out
    assert "the search stopped, and no champion was registered: the baseline did" in out
    assert "champion (" not in out


def test_a_search_that_breaks_is_failed_registers_nothing_and_shows_no_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import search.commands.search

    secret = "Tb-Pw-31337"

    def broken(*args: object) -> None:
        # A bug after the baseline, whose message quotes a URL with a password.
        raise RuntimeError(f"lost postgresql://ann:{secret}@db/s")

    monkeypatch.setattr(search.commands.search, "check_baseline_learned", broken)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    code = main(
        ["search", "--config", str(Path(__file__).parent / "tiny_search.yaml"), "--quiet",
         "--tracking-uri", uri, "--storage", str(tmp_path / "j.journal"), "--study", "broken"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "RuntimeError: lost postgresql://ann:***@db/s" in err
    assert secret not in err
    _assert_failed_without_champion(uri)


def _confirmed_search(tmp_path: Path, **search: Any) -> tuple[Any, optuna.Study, Any]:
    """The tiny search with `search` settings on real storage: (outcome, study, config)."""
    from search.commands import run_search
    from search.config import validate

    raw = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    raw["search"] |= search | {"study": "confirmed", "storage": str(tmp_path / "j.journal")}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    config = validate(raw, "test")
    outcome = run_search(config, progress=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal"))
    )
    return outcome, optuna.load_study(study_name="confirmed", storage=storage), config


def test_by_folds_the_out_of_fold_interval_decides_in_place_of_the_split_s() -> None:
    study = _study(
        [
            (0.968, 100.0, (-0.02, 0.015)),  # its split's interval crosses the floor
            (0.975, 300.0, (-0.004, 0.014)),  # its split's interval clears it
        ]
    )
    folds = {"runs": 3, "by": "folds", "val_delta_mean": -0.002}
    study.set_user_attr(
        "tabslim_confirmation",
        {"1": folds | {"passed": True}, "2": folds | {"passed": False}},
    )
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 1
    assert chosen.note == (
        "smallest trial whose out-of-fold 95% interval (a certificate of the recipe, not of the "
        "registered weights) lies within the floor"
    )
    study.set_user_attr("tabslim_confirmation", {"1": folds | {"passed": False}})
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 0
    # Trial 2 was not judged (confirmation stopped at trial 1, where it passed then), and the
    # note counts it.
    assert chosen.note == (
        "no candidate's out-of-fold 95% interval (a certificate of the recipe, not of the "
        "registered weights) lies within the floor, so the champion is the baseline (1 "
        "candidate judged, 1 more not judged)"
    )
    assert chosen.failed and chosen.failed[0].startswith("trial 1 (0.1x): out-of-fold delta")


@pytest.mark.slow
def test_confirmation_by_folds_scores_every_training_and_validation_row(tmp_path: Path) -> None:
    from search.study import build_context

    outcome, study, config = _confirmed_search(tmp_path, confirm=3, confirm_by="folds")
    summary = study.user_attrs["tabslim_confirmation"]
    order = [t.number for t in candidates(study)]
    judged = list(map(int, summary))  # in the order the fixed sequence judged them
    assert judged and set(judged) <= set(order)
    assert all(e["by"] == "folds" and 2 <= e["runs"] <= 3 for e in summary.values())
    assert all(e["runs"] == 3 or e["rejected_early"] for e in summary.values())
    # A fixed sequence: every candidate judged passed but the last, which may have failed.
    failed = [n for n in judged if not summary[str(n)]["passed"]]
    assert failed in ([], [judged[-1]])
    held = [n for n in judged if summary[str(n)]["passed"]]
    cost = study.user_attrs["tabslim_confirm_cost"]
    assert cost["candidates"] == len(judged) and cost["trainings"] >= 3 + 2 * len(judged)
    chosen = champion(study)
    assert chosen.trial is not None
    if held:
        assert chosen.trial.number == min(held, key=order.index)
    else:
        assert chosen.trial.user_attrs.get("baseline")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    path = client.download_artifacts(outcome.parent_run_id, "certification.csv", str(tmp_path))
    table = pd.read_csv(path)
    data = build_context(config).data
    # Every training and validation row is scored once, by networks that did not train on it
    # (a candidate rejected early after two folds was scored on two folds' rows).
    full = table[table["trial"].isin([n for n in judged if summary[str(n)]["runs"] == 3])]
    assert set(full["cv_rows"]) == {len(data.train_frame) + len(data.val_frame)}
    assert (table["cv_delta_ci_low"] <= table["cv_delta_ci_high"]).all()
    assert sorted(table["trial"]) == sorted(judged)


def test_folds_need_at_least_two() -> None:
    from lightning_modules.errors import TabslimInputError
    from search.config import validate

    with pytest.raises(TabslimInputError, match="confirm_by folds needs search.confirm of at"):
        validate({"search": {"confirm": 1, "confirm_by": "folds"}}, "test")


def test_the_floor_of_an_error_metric_is_relative_to_the_baseline() -> None:
    # 0.005 of RMSE means nothing for a target in the hundreds; 0.5% of the baseline's does.
    rmse = StudySettings(metric="rmse", higher_is_better=False, max_metric_drop=0.005)
    assert rmse.with_baseline(0, 42.0).floor() == pytest.approx(42.21)
    assert rmse.with_baseline(0, 42.0).is_confident(-1.0, 0.2)
    assert not rmse.with_baseline(0, 42.0).is_confident(-1.0, 0.25)
    accuracy = StudySettings(metric="accuracy", higher_is_better=True, max_metric_drop=0.005)
    assert accuracy.with_baseline(0, 0.9).floor() == pytest.approx(0.895)


def test_an_int8_copy_is_champion_when_it_ties_on_size_and_is_faster() -> None:
    study = _study([(0.972, 100.0, (-0.004, 0.01))])
    source = study.trials[1]
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.971, 100.0, 0.6],  # same parameters, faster than the source's 1.0
            user_attrs={"approach": "quantize", "precision": "int8_static", "variant_of": 1,
                        "hidden": source.user_attrs["hidden"],
                        "metrics": {"parameters": 100.0, "val_delta_ci_low": -0.004,
                                    "val_delta_ci_high": 0.008}},
            constraints={"metric_floor": SETTINGS.violation(0.971)},
        )
    )  # fmt: skip
    picked = champion(study)
    assert picked.trial is not None and picked.trial.user_attrs["precision"] == "int8_static"
