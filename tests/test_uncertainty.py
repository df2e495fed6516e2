from __future__ import annotations

import numpy as np
import pytest

from search.measure import paired_delta


@pytest.mark.parametrize("metric", ["accuracy", "rmse"])
@pytest.mark.parametrize("rows", [30, 500])
def test_identical_predictions_have_an_interval_of_exactly_zero(metric: str, rows: int) -> None:
    scores = np.random.default_rng(rows).random(rows)
    if metric == "accuracy":
        scores = (scores < 0.8).astype(float)
    delta = paired_delta(scores, scores.copy(), metric, seed=1)
    assert (delta.delta, delta.low, delta.high) == (0.0, 0.0, 0.0)


def test_one_row_more_right_is_a_positive_accuracy_delta() -> None:
    baseline = (np.arange(200) % 4 != 0).astype(float)  # 0.75 correct
    candidate = baseline.copy()
    candidate[0] = 1.0  # row 0 was wrong for the baseline
    delta = paired_delta(candidate, baseline, "accuracy", seed=0)
    assert delta.delta == pytest.approx(1 / 200)
    # Only that row differs: every resample either holds it (a gain) or not (no change).
    assert delta.low == 0.0 and delta.high > 0.0


def test_a_smaller_squared_error_on_one_row_is_a_negative_rmse_delta() -> None:
    baseline = np.full(100, 4.0)
    candidate = baseline.copy()
    candidate[7] = 1.0
    delta = paired_delta(candidate, baseline, "rmse", seed=0)
    assert delta.delta == pytest.approx(np.sqrt(397 / 100) - 2.0)
    assert delta.delta < 0 and delta.high <= 0.0 < -delta.low


def test_the_seed_reproduces_the_interval_and_other_seeds_move_it() -> None:
    rng = np.random.default_rng(0)
    baseline = (rng.random(300) < 0.8).astype(float)
    candidate = np.where(rng.random(300) < 0.1, 1 - baseline, baseline)
    first = paired_delta(candidate, baseline, "accuracy", seed=3)
    assert paired_delta(candidate, baseline, "accuracy", seed=3) == first
    # Bounds are multiples of 1/300, so neighbouring seeds may tie; some seed moves them.
    others = {
        (d.low, d.high)
        for d in (paired_delta(candidate, baseline, "accuracy", seed=s) for s in range(4, 12))
    }
    assert others - {(first.low, first.high)}
    assert first.low < first.delta < first.high


@pytest.mark.parametrize("rows", [85, 270, 3000])
def test_counting_agrees_with_resampling_rows(rows: int) -> None:
    # 0/1 rows are bootstrapped through multinomial counts; scipy resamples the rows.
    from scipy import stats

    rng = np.random.default_rng(rows)
    baseline = (rng.random(rows) < 0.85).astype(float)
    candidate = np.where(rng.random(rows) < 0.08, 1 - baseline, baseline)
    counted = paired_delta(candidate, baseline, "accuracy", seed=0)
    resampled = stats.bootstrap(
        (candidate, baseline),
        lambda c, b, axis=-1: c.mean(axis=axis) - b.mean(axis=axis),
        paired=True, vectorized=True, n_resamples=20_000, method="percentile",
        rng=np.random.default_rng(1),
    ).confidence_interval  # fmt: skip
    # Within a couple of rows: both are percentiles of the same distribution.
    assert counted.low == pytest.approx(resampled.low, abs=2.5 / rows)
    assert counted.high == pytest.approx(resampled.high, abs=2.5 / rows)


def test_paired_rows_must_match() -> None:
    with pytest.raises(ValueError, match="two equal, non-empty vectors"):
        paired_delta(np.ones(3), np.ones(4), "accuracy")
