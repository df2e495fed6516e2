"""The classifier two-sample test: it sees what per-column tests miss, and keeps quiet about
what does not matter however many rows there are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import MLPSpec, build
from search.monitor import (
    NO_REFERENCE_ROWS,
    DriftReport,
    Multivariate,
    classifier_two_sample,
    compare,
    multivariate_drift,
    render_html,
)
from search.serving import REFERENCE_ROWS_FILE, build_profile

COLUMNS = ["x1", "x2", "noise0", "noise1", "noise2", "colour"]


def _table(rows: int, corr: float, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """x1, x2 standard normal with correlation `corr`; noise and a colour independent."""
    rng = np.random.default_rng(seed)
    x1, other = rng.normal(size=rows), rng.normal(size=rows)
    table = {"x1": x1 + shift, "x2": corr * x1 + np.sqrt(1 - corr**2) * other}
    table |= {f"noise{i}": rng.normal(size=rows) for i in range(3)}
    table["colour"] = rng.choice(["red", "green", "blue"], size=rows)
    return pd.DataFrame(table)


@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, dict[str, Any]]:
    """2,000 rows with corr(x1, x2) = +0.8, and the profile a model trained on them carries."""
    frame = _table(2000, 0.8, seed=0).assign(y=lambda f: np.where(f.x1 > 0, "yes", "no"))
    data = TabularDataModule.from_frame(frame, "y")
    network = build(MLPSpec(hidden=(8,), **data.network_inputs()), seed=0)
    return frame, build_profile(data, network)


def test_a_rotation_is_missed_by_every_column_and_found_jointly(
    reference: tuple[pd.DataFrame, dict[str, Any]],
) -> None:
    frame, profile = reference
    rotated = _table(2000, -0.8, seed=1)  # the same marginals, the opposite correlation
    assert compare(profile, rotated).drifted == []
    found = classifier_two_sample(frame, rotated, profile["columns"])
    assert found.drifted and found.low > 0.75
    assert {c for c, _ in found.top_columns[:2]} == {"x1", "x2"}
    assert "drifted; separated most by x" in found.describe()


def test_two_draws_of_one_distribution_are_not_drifted() -> None:
    found = classifier_two_sample(_table(2000, 0.8, 0), _table(2000, 0.8, 1), COLUMNS, seed=3)
    assert found.low <= 0.5 <= found.high
    assert not found.drifted
    assert found.reference_rows == found.new_rows == 2000


def test_a_negligible_shift_is_not_drift_however_many_rows_show_it() -> None:
    # 0.15 standard deviations in one column: significant at 10,000 rows a side (the interval
    # lies above 0.5), but short of the effect size the verdict asks for.
    found = classifier_two_sample(
        _table(10_000, 0.0, 0), _table(10_000, 0.0, 1, shift=0.15), COLUMNS, max_rows=10_000
    )
    assert found.low > 0.5 and found.high < found.threshold
    assert not found.drifted


def test_a_million_new_rows_cost_max_rows() -> None:
    rng = np.random.default_rng(0)
    new = pd.DataFrame(rng.normal(size=(1_000_000, 2)), columns=["a", "b"])
    found = classifier_two_sample(new.iloc[:3000], new, ["a", "b"], max_rows=500)
    assert found.reference_rows == found.new_rows == 500


def test_the_stored_rows_are_compared_on_features_only(
    reference: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, profile = reference
    assert multivariate_drift(tmp_path, profile, frame) is None  # no rows stored
    frame.to_parquet(tmp_path / REFERENCE_ROWS_FILE, index=False)
    # The target alone would separate these rows perfectly; it must not take part.
    new = _table(1000, 0.8, seed=2).assign(y="other")
    found = multivariate_drift(tmp_path, profile, new)
    assert found is not None and not found.drifted
    assert found.new_rows == 1000 and "y" not in dict(found.top_columns)


def test_the_report_shows_the_test_or_says_why_it_did_not_run(tmp_path: Path) -> None:
    found = Multivariate(0.71, 0.69, 0.73, 0.55, True, 2000, 2000, [("x1", 0.2), ("x2", 0.1)])
    report = DriftReport(2000, 0.2, 0.05, multivariate=found)
    line = (
        "multivariate (classifier two-sample, 2,000 + 2,000 rows): AUC 0.71 [0.69, 0.73] > "
        "0.55: drifted; separated most by x1, x2"
    )
    assert line in report.summary()
    stored = json.loads(json.dumps(report.to_dict()))["multivariate"]
    assert stored["auc"] == 0.71 and stored["top_columns"][0] == {"column": "x1", "auc_drop": 0.2}
    png = tmp_path / "drift.png"
    png.write_bytes(b"png")
    assert "separated most by x1, x2" in render_html(report, "t", png)
    silent = DriftReport(2000, 0.2, 0.05, multivariate_note=NO_REFERENCE_ROWS)
    assert NO_REFERENCE_ROWS in silent.summary()
    assert "did not run" in render_html(silent, "t", png)
