"""`search.confirm: auto` and the order in which confirmation by folds judges the front."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from test_champion import _confirmed_search, _study

from lightning_modules.errors import TabslimInputError
from search.config import validate
from search.front import (
    AUTO_FOLDS,
    AUTO_MIN_ROWS,
    auto_plan,
    candidates,
    champion,
    study_text,
)
from search.study import StudyKey

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_auto_confirms_by_folds_where_the_split_is_too_coarse_and_folds_are_fine_enough() -> None:
    # The HI table: +/-0.0069 on 3,341 validation rows, 18,931 training and validation rows.
    plan = auto_plan(0.0069, 0.005, 3341, 18931, time_ordered=False)
    assert (plan.k, plan.by) == (AUTO_FOLDS, "folds")
    # 0.0069 * sqrt(3341 / 18931) = 0.0029: the interval the folds are expected to give.
    assert "+/-0.0029" in plan.reason and "wider than the floor (0.005)" in plan.reason


@pytest.mark.parametrize(
    ("half", "val_rows", "rows", "time_ordered", "why"),
    [
        (0.004, 3341, 18931, False, "not needed"),  # the split resolves the floor already
        (0.0069, 3341, 18931, True, "data.time_column orders the rows"),
        (0.0093, 270, 1527, False, f"fewer than {AUTO_MIN_ROWS}"),  # digits: too few rows
        (0.02, 1500, 9000, False, "still wider"),  # folds would not resolve it either
    ],
)
def test_auto_skips_confirmation_where_it_cannot_help_and_says_why(
    half: float, val_rows: int, rows: int, time_ordered: bool, why: str
) -> None:
    plan = auto_plan(half, 0.005, val_rows, rows, time_ordered)
    assert plan.k == 0
    assert plan.reason.startswith("auto: ") and why in plan.reason


def _with_variant(study: optuna.Study, source: int, size: float) -> None:
    """An INT8 copy of trial `source`, `size` parameters, at the source's metric."""
    frozen = study.trials[source]
    study.add_trial(
        optuna.trial.create_trial(
            values=[frozen.values[0], size, 0.5],
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs={**frozen.user_attrs, "approach": "quantize", "variant_of": source},
            constraints=frozen.system_attrs.get("constraints"),
        )
    )


def test_candidates_are_every_trial_that_could_hold_smallest_first_an_int8_copy_by_its_size() -> (
    None
):
    study = _study(
        [
            (0.968, 200.0, (-0.01, 0.01)),  # trial 1
            (0.971, 500.0, (-0.01, 0.01)),  # trial 2, with a copy smaller than trial 1
            (0.90, 50.0, (-0.1, -0.05)),  # trial 3: wholly below the floor, never a candidate
        ]
    )
    _with_variant(study, 2, 150.0)
    assert [t.number for t in candidates(study)] == [4, 1, 2]
    # The copy and its source passed: the copy (trial 4) is champion, trial 1 was not judged.
    held = {"runs": 5, "by": "folds", "passed": True, "val_delta_mean": 0.001,
            "cv_delta_ci_low": -0.002, "cv_delta_ci_high": 0.004}  # fmt: skip
    study.set_user_attr(StudyKey.CONFIRMATION, {"2": held, "4": held})
    study.set_user_attr(StudyKey.CONFIRM_PLAN, {"k": 5, "by": "folds", "reason": "auto: test"})
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 4
    text = study_text(study)
    assert "certification: by 5 folds (certifies the recipe" in text and "(auto: test)" in text
    assert "(out-of-fold delta +0.0010 [-0.0020, +0.0040])" in text
    assert "judged out-of-fold" in text


def test_without_certification_rows_the_split_decides_and_the_report_says_it_is_optimistic() -> (
    None
):
    study = _study([(0.975, 300.0, (-0.004, 0.014))])
    study.set_user_attr(
        StudyKey.CONFIRM_PLAN, {"k": 0, "by": "validation", "reason": "search.confirm: 0"}
    )
    text = study_text(study)
    assert "certification: on the validation rows, which also selected (optimistic)" in text
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 1
    assert "validation rows (which also selected it: optimistic)" in chosen.note


def test_confirm_is_auto_by_default_and_seeds_were_removed_with_a_reason() -> None:
    config = validate({}, "test")
    assert config.search.confirm == "auto" and config.search.confirm_by is None
    assert config.data.certify_fraction == 0.15
    for confirm in ("auto", 3):
        with pytest.raises(TabslimInputError, match="search.confirm_by: seeds was removed"):
            validate({"search": {"confirm": confirm, "confirm_by": "seeds"}}, "test")
    with pytest.raises(
        TabslimInputError, match=r"expected auto or a number of runs from 0 to 20, but got 'x'"
    ):
        validate({"search": {"confirm": "x"}}, "test")


def test_a_default_search_on_a_small_table_certifies_on_its_held_out_rows(
    tmp_path: Path,
) -> None:
    outcome, study, _ = _confirmed_search(tmp_path)  # search.confirm left at its default, auto
    plan = study.user_attrs[StudyKey.CONFIRM_PLAN]
    assert plan["k"] == 0 and plan["by"] == "holdout" and plan["reason"].startswith("auto: ")
    # Nothing trained for it: the candidates' stored scores on the certification rows.
    assert study.user_attrs[StudyKey.CONFIRM_COST]["trainings"] == 0
    assert f"certification: on {plan['certify_rows']} held-out rows" in outcome.report
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(outcome.parent_run_id)}
    assert "certification.csv" in artifacts
