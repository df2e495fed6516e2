from __future__ import annotations

import itertools

import numpy as np
import pytest

from search.front import dominated_volume


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
