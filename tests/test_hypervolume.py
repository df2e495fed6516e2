from __future__ import annotations

import itertools

import numpy as np
import pytest
from hand_built import ACCURACY, RMSE, accuracy_study, add_trial, new_study

from search.front import dominated_volume, hypervolume


def _grid_volume(points: np.ndarray, reference: np.ndarray, cells: int = 40) -> float:
    """The same volume counted on a grid of cell centres: slow, but obviously right."""
    axes = [np.linspace(0, r, cells, endpoint=False) + r / cells / 2 for r in reference]
    inside = 0
    for corner in itertools.product(*axes):
        inside += bool(np.any(np.all(points <= np.array(corner), axis=1)))
    return inside * float(np.prod(reference)) / cells ** len(reference)


def test_one_point_dominates_its_box_up_to_the_reference() -> None:
    volume = dominated_volume(np.array([[0.2, 0.5, 1.0]]), np.array([1.0, 1.0, 2.0]))
    assert volume == pytest.approx(0.8 * 0.5 * 1.0)


def test_overlapping_boxes_count_once() -> None:
    # Two 2-D boxes of area 0.5 each that overlap in a 0.25 square: 0.75 in all.
    points = np.array([[0.0, 0.5], [0.5, 0.0]])
    assert dominated_volume(points, np.array([1.0, 1.0])) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_fronts_match_a_grid_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = np.round(rng.random((6, 3)) * 40) / 40  # on the grid's cell edges
    reference = np.ones(3)
    assert dominated_volume(points, reference) == pytest.approx(
        _grid_volume(points, reference), abs=1e-12
    )


def test_points_outside_the_reference_add_nothing() -> None:
    reference = np.array([1.0, 1.0, 1.0])
    inside = np.array([[0.5, 0.5, 0.5]])
    outside = np.array([[0.1, 1.0, 0.1], [1.5, 0.0, 0.0], [np.nan, 0.0, 0.0]])
    assert dominated_volume(np.vstack([inside, outside]), reference) == pytest.approx(0.125)
    assert dominated_volume(outside, reference) == 0.0


def test_hypervolume_is_zero_for_only_the_baseline() -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.97, 1_000, 2.0, baseline=True)
    assert hypervolume(study) == 0.0


def test_hypervolume_matches_a_hand_computed_box() -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.97, 1_000, 2.0, baseline=True)
    add_trial(study, 0.97, 500, 1.6)  # loss 0, size ratio 0.5, latency ratio 0.8
    assert hypervolume(study) == pytest.approx(0.005 * 0.5 * 0.45)
    assert hypervolume(study, latency_ref=1.0) == pytest.approx(0.005 * 0.5 * 0.2)


def test_hypervolume_grows_with_a_dominating_point_and_ignores_the_rest() -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.97, 1_000, 2.0, baseline=True)
    add_trial(study, 0.97, 500, 1.6)
    before = hypervolume(study)
    add_trial(study, 0.95, 100, 0.2)  # infeasible: below the floor
    add_trial(study, 0.99, 1_200, 0.2)  # larger than the baseline: outside the box
    assert hypervolume(study) == pytest.approx(before)
    add_trial(study, 0.971, 400, 1.0)  # dominates trial 1
    assert hypervolume(study) > before


def test_hypervolume_counts_loss_the_other_way_for_lower_is_better_metrics() -> None:
    study = new_study(RMSE)
    add_trial(study, 10.0, 1_000, 2.0, baseline=True)
    add_trial(study, 9.9, 500, 1.6)  # rmse 0.1 better: loss clipped at 0, so the box is 0.5 deep
    assert hypervolume(study) == pytest.approx(0.5 * 0.5 * 0.45)
    add_trial(study, 10.3, 500, 1.6)  # rmse 0.3 worse: loss 0.3, a shallower box it lies inside
    assert hypervolume(study) == pytest.approx(0.5 * 0.5 * 0.45)


def test_hypervolume_does_not_reward_gains_over_the_baseline() -> None:
    # A better validation metric counts as no loss: on small tables it is a row or two of luck.
    study = new_study(ACCURACY)
    add_trial(study, 0.97, 1_000, 2.0, baseline=True)
    add_trial(study, 0.99, 500, 1.6)
    assert hypervolume(study) == pytest.approx(0.005 * 0.5 * 0.45)


@pytest.mark.parametrize("latency_ref", [0.0, -1.0, float("nan")])
def test_hypervolume_rejects_a_bad_latency_reference(latency_ref: float) -> None:
    with pytest.raises(ValueError, match="latency_ref"):
        hypervolume(accuracy_study(), latency_ref=latency_ref)
