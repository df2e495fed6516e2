from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.study import StudyDirection

from search.hypervolume import hypervolume
from search.pareto import TABLE_COLUMNS, front, metric_floor, recommend, trial_table
from search.plots import plot_front_html, plot_front_png
from search.report import format_report

optuna.logging.set_verbosity(optuna.logging.WARNING)

ACCURACY = {
    "task": "multiclass",
    "metric": "accuracy",
    "higher_is_better": True,
    "size": "parameters",
    "latency": "latency_onnxruntime_b1024_median_ms",
    "max_metric_drop": 0.005,
    "baseline_trial": 0,
    "baseline_metric": 0.97,
}
RMSE = {
    "task": "regression",
    "metric": "rmse",
    "higher_is_better": False,
    "size": "size_bytes",
    "latency": "latency_onnxruntime_b1024_median_ms",
    "max_metric_drop": 0.5,
    "baseline_trial": 0,
    "baseline_metric": 10.0,
}


def _study(settings: dict[str, Any]) -> optuna.Study:
    minimize = StudyDirection.MINIMIZE
    metric = StudyDirection.MAXIMIZE if settings["higher_is_better"] else minimize
    study = optuna.create_study(directions=[metric, minimize, minimize])
    study.set_user_attr("tabslim", settings)
    return study


def _add(
    study: optuna.Study,
    metric: float,
    size: float,
    latency: float,
    *,
    approach: str = "scratch",
    hidden: Sequence[int] = (64, 32),
    baseline: bool = False,
    metrics: dict[str, float] | None = None,
    constraint: float | None = None,
) -> None:
    """Add a COMPLETE trial whose constraint is computed as the objective does, from the floor."""
    settings = study.user_attrs["tabslim"]
    if constraint is None:
        drop = settings["max_metric_drop"]
        if settings["higher_is_better"]:
            constraint = (settings["baseline_metric"] - drop) - metric
        else:
            constraint = metric - (settings["baseline_metric"] + drop)
    user_attrs: dict[str, Any] = {
        "approach": approach,
        "hidden": list(hidden),
        "metrics": {"parameters": size} if metrics is None else metrics,
    }
    if baseline:
        user_attrs["baseline"] = True
    study.add_trial(
        optuna.trial.create_trial(
            values=[metric, size, latency],
            user_attrs=user_attrs,
            constraints={"metric_floor": constraint},
        )
    )


def _accuracy_study() -> optuna.Study:
    """Baseline 0; 1 and 4 on the front; 2 infeasible; 3 dominated by 1; baseline dominated by 4."""
    study = _study(ACCURACY)
    _add(study, 0.970, 10_000, 2.0, hidden=(256, 128), baseline=True)
    _add(
        study,
        0.968,
        2_500,
        1.0,
        hidden=(64, 32),
        metrics={"parameters": 2_500, "test_accuracy": 0.961},
    )
    _add(study, 0.960, 1_000, 0.8, approach="prune", hidden=(32, 16))
    _add(study, 0.966, 5_000, 1.5, hidden=(128, 32))
    _add(study, 0.972, 6_000, 1.8, approach="prune", hidden=(128, 64))
    return study


def test_front_excludes_infeasible_and_dominated_trials() -> None:
    members = front(_accuracy_study())
    assert [t.number for t in members] == [1, 4]


def test_front_trusts_optuna_feasibility_from_create_trial_constraints() -> None:
    study = _accuracy_study()
    infeasible = study.trials[2]
    assert infeasible.constraints == {"metric_floor": pytest.approx(0.005)}
    assert 2 not in {t.number for t in study.best_trials}


def test_a_trial_without_constraints_counts_as_feasible() -> None:
    # Optuna treats an empty constraint dict as feasible, even beside constrained trials.
    study = _study(ACCURACY)
    study.add_trial(optuna.trial.create_trial(values=[0.97, 10_000, 2.0], user_attrs={}))
    _add(study, 0.90, 1_000, 1.0)
    assert [t.number for t in front(study)] == [0]
    assert trial_table(study)["feasible"].tolist() == [False, True]


def test_table_for_higher_is_better_metric() -> None:
    table = trial_table(_accuracy_study())
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["trial"].tolist() == [2, 1, 3, 4, 0]  # sorted by size
    row = table.set_index("trial").loc[1]
    assert row["metric_delta"] == pytest.approx(-0.002)
    assert row["size_ratio"] == pytest.approx(0.25)
    assert row["param_ratio"] == pytest.approx(0.25)
    assert row["latency_ratio"] == pytest.approx(0.5)
    assert row["test_metric"] == pytest.approx(0.961)
    assert row["hidden"] == "64-32"
    assert bool(row["feasible"]) and bool(row["pareto"])
    by_trial = table.set_index("trial")
    assert by_trial["baseline"].to_dict() == {2: False, 1: False, 3: False, 4: False, 0: True}
    assert by_trial["feasible"].to_dict() == {2: False, 1: True, 3: True, 4: True, 0: True}
    assert by_trial["pareto"].to_dict() == {2: False, 1: True, 3: False, 4: True, 0: False}
    assert math.isnan(by_trial.loc[3, "test_metric"])


def test_table_for_lower_is_better_metric_uses_size_objective_and_parameters_apart() -> None:
    study = _study(RMSE)
    # Size objective is bytes; parameters live in metrics and get their own ratio.
    _add(study, 10.0, 4_000, 2.0, baseline=True, metrics={"parameters": 1_000})
    _add(study, 10.3, 1_000, 1.0, metrics={"parameters": 250, "test_rmse": 10.9})
    _add(study, 10.8, 500, 0.5, metrics={"parameters": 120})
    table = trial_table(study).set_index("trial")
    assert table.loc[1, "metric_delta"] == pytest.approx(0.3)  # positive: worse for rmse
    assert table.loc[1, "size_ratio"] == pytest.approx(0.25)
    assert table.loc[1, "param_ratio"] == pytest.approx(0.25)
    assert table.loc[1, "test_metric"] == pytest.approx(10.9)
    assert not table.loc[2, "feasible"]
    assert [t.number for t in front(study)] == [1, 0]
    assert metric_floor(study) == pytest.approx(10.5)


def test_table_ratios_are_nan_without_a_finished_baseline() -> None:
    settings = {k: v for k, v in ACCURACY.items() if k not in ("baseline_trial", "baseline_metric")}
    study = _study(settings)
    _add(study, 0.9, 100, 1.0, constraint=-1.0)
    table = trial_table(study)
    assert table[["metric_delta", "size_ratio", "param_ratio", "latency_ratio"]].isna().all().all()
    assert not table["baseline"].any()
    assert metric_floor(study) is None
    assert hypervolume(study) == 0.0


def test_table_skips_unfinished_trials_and_is_empty_for_a_new_study() -> None:
    study = _accuracy_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert len(trial_table(study)) == 5
    empty = trial_table(_study(ACCURACY))
    assert empty.empty
    assert tuple(empty.columns) == TABLE_COLUMNS


def test_recommend_picks_the_smallest_feasible_trial() -> None:
    assert recommend(_accuracy_study()).number == 1  # type: ignore[union-attr]


def test_recommend_breaks_size_ties_by_latency_then_metric() -> None:
    study = _study(ACCURACY)
    _add(study, 0.970, 10_000, 2.0, baseline=True)
    _add(study, 0.969, 1_000, 1.2)
    _add(study, 0.967, 1_000, 1.1)
    _add(study, 0.968, 1_000, 1.1)
    assert recommend(study).number == 3  # type: ignore[union-attr]


def test_recommend_is_none_without_a_feasible_trial() -> None:
    study = _study(ACCURACY)
    _add(study, 0.90, 1_000, 1.0)
    _add(study, 0.95, 2_000, 1.0)
    assert recommend(study) is None
    assert front(study) == []
    assert recommend(_study(ACCURACY)) is None


def test_hypervolume_is_zero_for_only_the_baseline() -> None:
    study = _study(ACCURACY)
    _add(study, 0.97, 1_000, 2.0, baseline=True)
    assert hypervolume(study) == 0.0


def test_hypervolume_matches_a_hand_computed_box() -> None:
    study = _study(ACCURACY)
    _add(study, 0.97, 1_000, 2.0, baseline=True)
    _add(study, 0.97, 500, 1.6)  # loss 0, size ratio 0.5, latency ratio 0.8
    assert hypervolume(study) == pytest.approx(0.005 * 0.5 * 0.45)
    assert hypervolume(study, latency_ref=1.0) == pytest.approx(0.005 * 0.5 * 0.2)


def test_hypervolume_grows_with_a_dominating_point_and_ignores_the_rest() -> None:
    study = _study(ACCURACY)
    _add(study, 0.97, 1_000, 2.0, baseline=True)
    _add(study, 0.97, 500, 1.6)
    before = hypervolume(study)
    _add(study, 0.95, 100, 0.2)  # infeasible: below the floor
    _add(study, 0.99, 1_200, 0.2)  # larger than the baseline: outside the box
    assert hypervolume(study) == pytest.approx(before)
    _add(study, 0.971, 400, 1.0)  # dominates trial 1
    assert hypervolume(study) > before


def test_hypervolume_counts_loss_the_other_way_for_lower_is_better_metrics() -> None:
    study = _study(RMSE)
    _add(study, 10.0, 1_000, 2.0, baseline=True)
    _add(study, 9.9, 500, 1.6)  # rmse 0.1 better: loss clipped at 0, so the box is 0.5 deep
    assert hypervolume(study) == pytest.approx(0.5 * 0.5 * 0.45)
    _add(study, 10.3, 500, 1.6)  # rmse 0.3 worse: loss 0.3, a shallower box it lies inside
    assert hypervolume(study) == pytest.approx(0.5 * 0.5 * 0.45)


def test_hypervolume_does_not_reward_gains_over_the_baseline() -> None:
    # A better validation metric counts as no loss: on small tables it is a row or two of luck.
    study = _study(ACCURACY)
    _add(study, 0.97, 1_000, 2.0, baseline=True)
    _add(study, 0.99, 500, 1.6)
    assert hypervolume(study) == pytest.approx(0.005 * 0.5 * 0.45)


@pytest.mark.parametrize("latency_ref", [0.0, -1.0, float("nan")])
def test_hypervolume_rejects_a_bad_latency_reference(latency_ref: float) -> None:
    with pytest.raises(ValueError, match="latency_ref"):
        hypervolume(_accuracy_study(), latency_ref=latency_ref)


def test_metric_floor_is_baseline_minus_allowed_drop() -> None:
    assert metric_floor(_accuracy_study()) == pytest.approx(0.965)


def test_plot_front_html_is_offline_and_names_trials(tmp_path: Path) -> None:
    study = _accuracy_study()
    path = plot_front_html(
        trial_table(study), tmp_path / "front.html", metric="accuracy", floor=metric_floor(study)
    )
    html = path.read_text(encoding="utf-8")
    assert "plotly" in html
    assert '<script src="https://cdn.plot.ly' not in html  # plotly.js is inline
    for number in range(5):
        assert f"trial {number} (" in html
    assert "64-32" in html


def test_plot_front_png_writes_a_png(tmp_path: Path) -> None:
    study = _accuracy_study()
    path = plot_front_png(
        trial_table(study), tmp_path / "front.png", metric="accuracy", floor=metric_floor(study)
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_survive_an_empty_table_and_a_missing_baseline(tmp_path: Path) -> None:
    empty = trial_table(_study(ACCURACY))
    assert plot_front_png(empty, tmp_path / "empty.png", metric="accuracy").stat().st_size > 0
    assert plot_front_html(empty, tmp_path / "empty.html", metric="accuracy").stat().st_size > 0
    study = _study({k: v for k, v in ACCURACY.items() if k != "baseline_trial"})
    _add(study, 0.968, 2_500, 1.0)
    _add(study, 0.972, 6_000, 1.8)
    table = trial_table(study)
    assert plot_front_png(table, tmp_path / "nobase.png", metric="accuracy").exists()


def test_format_report_lists_the_baseline_first_then_front_members() -> None:
    report = format_report(trial_table(_accuracy_study()), metric="accuracy")
    header, columns, *rows = report.splitlines()
    assert "accuracy" in header and "5 finished trials" in header and "2 Pareto-front" in header
    assert columns.split()[:2] == ["trial", "approach"]
    assert [r.split()[0] for r in rows] == ["0", "1", "4"]
    assert rows[0].split()[1] == "baseline"
    assert "0.25x" in rows[1] and "0.50x" in rows[1] and "-0.0020" in rows[1]
    assert "0.9610" in rows[1]  # test accuracy
    # Aligned: the last column is right-aligned, so every line has the same width.
    assert len({len(line) for line in [columns, *rows]}) == 1


def test_format_report_signs_deltas_and_keeps_small_ratios_readable() -> None:
    study = _study(RMSE)
    _add(study, 10.0, 40_000, 2.0, baseline=True, metrics={"parameters": 10_000})
    _add(study, 10.3, 400, 0.5, metrics={"parameters": 100})
    header, _, base_row, row = format_report(trial_table(study), metric="rmse").splitlines()
    assert "rmse" in header
    assert "+0.0000" in base_row and "1.00x" in base_row
    assert "+0.3000" in row  # worse rmse is a positive delta
    assert "0.010x" in row and "0.25x" in row


def test_format_report_for_a_study_without_trials() -> None:
    report = format_report(trial_table(_study(ACCURACY)), metric="accuracy")
    assert report.startswith("No finished trials")


def test_table_dtypes_suit_filtering() -> None:
    table = trial_table(_accuracy_study())
    assert table["baseline"].dtype == bool
    assert pd.api.types.is_float_dtype(table["metric"])
