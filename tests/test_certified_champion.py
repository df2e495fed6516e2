"""The certified champion: every candidate judged smallest first, INT8 copies with their source,
early rejection, what the rows can certify, and the budget-first rule. Hand-built studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from test_champion import SETTINGS, _study

from search.commands import main
from search.front import (
    candidates,
    champion,
    floor_advice,
    front,
    rejects_early,
    study_text,
)
from search.front.quantized import _judged_with_source
from search.measure import PairedDelta
from search.study import StudyKey

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _folds(passed: bool, low: float, high: float, **extra: Any) -> dict[str, Any]:
    entry = {"runs": 5, "by": "folds", "passed": passed, "val_delta_mean": (low + high) / 2}
    return entry | {"cv_delta_ci_low": low, "cv_delta_ci_high": high, "cv_rows": 18_000} | extra


def _confirmed(study: optuna.Study, verdicts: dict[int, dict[str, Any]]) -> None:
    study.set_user_attr(StudyKey.CONFIRMATION, {str(n): v for n, v in verdicts.items()})
    study.set_user_attr(StudyKey.CONFIRM_PLAN, {"k": 5, "by": "folds", "reason": "test",
                                            "val_rows": 3000, "rows": 18000})  # fmt: skip


def test_the_walk_reaches_a_dominated_trial_when_the_smaller_front_members_fail() -> None:
    study = _study(
        [
            (0.976, 100.0, (-0.004, 0.02)),  # trial 1: on the front
            (0.972, 200.0, (-0.012, 0.016)),  # trial 2: dominated by trial 1 on validation
            (0.980, 500.0, (0.0, 0.02)),  # trial 3: on the front
        ]
    )
    assert 2 not in {t.number for t in front(study)}
    assert [t.number for t in candidates(study)] == [1, 2, 3]
    _confirmed(study, {1: _folds(False, -0.009, 0.001), 2: _folds(True, -0.004, 0.003)})
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 2
    assert "(1 smaller candidates failed)" not in chosen.note
    assert "(1 smaller candidate failed)" in chosen.note
    assert chosen.failed == (
        "trial 1 (0.1x): out-of-fold delta -0.0040 [-0.0090, +0.0010] crosses the floor (-0.005)",
    )
    text = study_text(study)
    assert "champion (confident): trial 2" in text
    assert "  passed over trial 1 (0.1x)" in text


def test_a_candidate_wholly_outside_the_floor_on_validation_is_not_judged() -> None:
    study = _study([(0.95, 100.0, (-0.03, -0.01)), (0.969, 200.0, (-0.012, 0.01))])
    assert [t.number for t in candidates(study)] == [2]


def test_an_int8_copy_that_beats_its_source_on_validation_does_not_hide_a_smaller_fp32_trial() -> (
    None
):
    # Trial 1 (100 parameters) is the copy's source; trial 2 (120) is another fp32 trial.
    study = _study([(0.970, 100.0, (-0.01, 0.01)), (0.971, 120.0, (-0.01, 0.01))])
    source = study.trials[1]
    own = 0.9721  # the copy's own validation score: rounding flipped a few rows its way
    objective = _judged_with_source(own, source.values[0], SETTINGS)
    assert objective == source.values[0]
    study.add_trial(
        optuna.trial.create_trial(
            values=[objective, 100.0, 0.5],  # faster than both fp32 trials (1.0)
            user_attrs={"approach": "quantize", "precision": "int8_dynamic", "variant_of": 1,
                        "hidden": [100], "metrics": {"parameters": 100.0, "val_accuracy": own,
                                                     "val_delta_ci_low": -0.008,
                                                     "val_delta_ci_high": 0.012}},
            constraints={"metric_floor": SETTINGS.violation(objective)},
        )
    )  # fmt: skip
    # Credited with its own 0.9721, the copy would dominate trial 2 (smaller, faster, better).
    assert 2 in {t.number for t in front(study)}
    # An error metric: the copy takes the higher (worse) of the two RMSEs.
    rmse = SETTINGS.__class__(metric="rmse", higher_is_better=False)
    assert _judged_with_source(10.0, 10.5, rmse) == 10.5


def test_an_int8_copy_passes_only_with_its_source() -> None:
    study = _study([(0.972, 100.0, (-0.004, 0.01))])
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.972, 100.0, 0.5],
            user_attrs={"approach": "quantize", "precision": "int8_static", "variant_of": 1,
                        "hidden": [100], "metrics": {"parameters": 100.0}},
            constraints={"metric_floor": SETTINGS.violation(0.972)},
        )
    )  # fmt: skip
    _confirmed(study, {2: _folds(True, -0.003, 0.004), 1: _folds(False, -0.007, 0.004)})
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 0
    # The copy's own interval cleared the floor, but its source's did not: both fail.
    assert [line.split(":")[0] for line in chosen.failed] == [
        "trial 2 (0.1x, int8_static)",
        "trial 1 (0.1x)",
    ]
    assert "its source, trial 1, does not hold the floor" in chosen.failed[0]


@pytest.mark.parametrize(
    ("low", "high", "seen", "rejected"),
    [
        (-0.02, -0.008, 2, True),  # wholly below the floor of -0.005 after two folds
        (-0.02, -0.001, 2, False),  # straddles the floor: more folds may clear it
        (-0.02, -0.008, 1, False),  # one fold's rows are too few to judge
        (-0.02, -0.008, 5, False),  # the last fold: judged in full, not early
    ],
)
def test_early_rejection_only_for_an_interval_already_outside_the_floor(
    low: float, high: float, seen: int, rejected: bool
) -> None:
    delta = PairedDelta((low + high) / 2, low, high)
    assert rejects_early(delta, SETTINGS, seen, 5) is rejected


def test_the_smallest_certifiable_floor_from_a_hand_built_interval_table() -> None:
    study = _study(
        [
            (0.955, 100.0, (-0.02, -0.01)),  # needs 2 points to hold
            (0.969, 300.0, (-0.008, 0.006)),  # needs 0.8 points; within the floor by its delta
            (0.971, 500.0, (-0.006, 0.008)),  # needs 0.6 points
        ]
    )
    study.set_user_attr(StudyKey.CONFIRM_PLAN, {"k": 0, "by": "folds", "reason": "auto: skipped",
                                            "val_rows": 3000, "rows": 18000})  # fmt: skip
    assert champion(study).trial.number == 0  # type: ignore[union-attr]
    smallest, steps, rows = floor_advice(study)
    assert smallest == (
        "exploratory: smallest floor these rows certify: max_metric_drop 0.006 (asked: 0.005); "
        "the champion there would be trial 3 (0.5x)"
    )
    assert (
        steps
        == "exploratory: floor each size certifies (smallest first): 0.1x at 0.02, 0.3x at 0.008, "
        "0.5x at 0.006"
    )
    # Trial 2: delta -0.001, half-width 0.007, margin to the floor 0.004: (0.007/0.004)^2 = 3.1
    # times its rows; trial 3: +0.001, 0.007, 0.006: 1.4 times.
    # Each trial is named once: 10x would certify trial 2 as 4x does, which says nothing new.
    assert rows == (
        "exploratory: more rows, if the deltas held: 2x the rows would certify trial 3 (0.5x), "
        "4x the rows would certify trial 2 (0.3x) at max_metric_drop 0.005"
    )
    text = study_text(study)
    assert smallest in text and rows in text


def _budget_study(budget: dict[str, Any]) -> optuna.Study:
    study = _study(
        [
            (0.968, 100.0, (-0.01, 0.006)),
            (0.975, 300.0, (-0.002, 0.012)),
            (0.980, 600.0, (0.002, 0.018)),
        ]
    )
    stored = study.user_attrs["tabslim"] | {
        "champion": "within_budget", "config": {"search": {"budget": budget}},
    }  # fmt: skip
    study.set_user_attr("tabslim", stored)
    return study


def test_within_budget_picks_the_most_accurate_candidate_under_the_budget() -> None:
    chosen = champion(_budget_study({"parameters": 400, "latency_ms": None}))
    assert chosen.trial is not None and chosen.trial.number == 2
    assert chosen.rule == "within_budget"
    assert "within search.budget (parameters <= 400)" in chosen.note
    assert "it holds the floor" in chosen.note
    # Confirmed out-of-fold, a candidate's judged delta decides, not its validation score.
    study = _budget_study({"parameters": 400})
    _confirmed(study, {1: _folds(True, -0.001, 0.009), 2: _folds(False, -0.009, 0.001)})
    assert champion(study).trial.number == 1  # type: ignore[union-attr]


def test_within_budget_names_the_closest_candidate_when_none_meets_it() -> None:
    chosen = champion(_budget_study({"parameters": 50, "latency_ms": 0.5}))
    assert chosen.trial is None
    assert chosen.note == (
        "no trial meets search.budget (parameters <= 50, latency_ms <= 0.5); the closest is "
        "trial 1 with 100 parameters and 1 ms"
    )


def test_within_budget_and_search_budget_go_together() -> None:
    from lightning_modules.errors import TabslimInputError
    from search.config import validate

    with pytest.raises(TabslimInputError, match="within_budget and search.budget go together"):
        validate({"search": {"champion": "within_budget"}}, "test")
    with pytest.raises(TabslimInputError, match="within_budget and search.budget go together"):
        validate({"search": {"budget": {"parameters": 1000}}}, "test")
    with pytest.raises(TabslimInputError, match="expected parameters, latency_ms or both"):
        validate({"search": {"champion": "within_budget", "budget": {}}}, "test")
    config = validate({"search": {"champion": "within_budget", "budget": {"latency_ms": 0.1}}}, "t")
    assert config.search.budget is not None and config.search.budget.latency_ms == 0.1


def test_a_search_whose_budget_nothing_meets_exits_2_naming_the_closest_and_keeps_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    raw["search"] |= {"champion": "within_budget", "budget": {"parameters": 1}, "n_trials": 3,
                      "max_epochs_factor": 3.0}  # fmt: skip
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(raw))
    journal = str(tmp_path / "j.journal")
    code = main(
        ["search", "--config", str(path), "--quiet", "--storage", journal, "--study", "b",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("tabslim: error: no trial meets search.budget (parameters <= 1); ")
    assert "the closest is trial " in err[0] and "Traceback" not in err[0]
    study = optuna.load_study(
        study_name="b",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal)),
    )
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len([t for t in trials if "variant_of" not in t.user_attrs]) >= 3
    # Every scratch trial records how its training ended; only the baseline keeps the plain cap.
    scratch = [t for t in trials if t.user_attrs.get("approach") == "scratch"]
    for trial in scratch:
        assert trial.user_attrs["stopped_by"] in ("early_stopping", "epoch_limit", "callback")
        assert trial.user_attrs["metrics"]["converged"] in (0.0, 1.0)
    # The baseline keeps the 3-epoch cap; a smaller network still improving there trains on.
    assert study.trials[0].user_attrs["metrics"]["epochs"] <= 3
    assert any(t.user_attrs["metrics"]["epochs"] > 3 for t in scratch[1:])
    assert main(["report", "--study", "b", "--storage", journal]) == 0
    assert "champion (within_budget): none, no trial meets search.budget" in capsys.readouterr().out
    # Run again under the default rule: the study keeps its trials and takes the new rule.
    raw["search"] = {k: v for k, v in raw["search"].items() if k not in ("champion", "budget")}
    path.write_text(yaml.safe_dump(raw))
    again = ["search", "--config", str(path), "--quiet", "--storage", journal, "--study", "b",
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    assert main(again) == 0
    assert "champion (confident): trial " in capsys.readouterr().out
