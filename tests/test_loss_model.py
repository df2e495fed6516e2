"""The regression loss model (DLE) stored without pickle through a public path, and the plain
arrays that models logged before issue 32 stored, which must still estimate as they did."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task
from search.serving import (
    LOSS_MODEL_FILE,
    LossModel,
    estimate_rmse,
    fit_estimator,
    load_loss_model,
    loss_features,
)

# Written by tabslim before issue 32 (commit b2a06d3): `fit_estimator` on `_rows(400, 7)`,
# seed 0, and the estimate it gave on `_rows(200, 8)`.
BEFORE = Path(__file__).parent / "data" / "dle_before_32"
ESTIMATE_BEFORE = (1.1928692711656883, 0.9021230207175879, 1.4254992990787807)
COLUMNS = {
    "x": {"type": "numeric"},
    "shop": {"type": "categorical", "frequencies": {"early": 0.5, "late": 0.5}},
}


def _rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows whose noise grows with x, a tenth of x missing; the target; the model's prediction."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    frame = pd.DataFrame({"x": x, "shop": np.where(x > 0.5, "late", "early")})
    frame.loc[rng.random(n) < 0.1, "x"] = np.nan
    return frame, 2 * x + (0.1 + 2 * x) * rng.normal(size=n), 2 * x


def _fit() -> tuple[dict[str, Any], LossModel]:
    frame, y, predicted = _rows(400, 7)
    estimator, model = fit_estimator(
        Task.REGRESSION, frame, pd.Series(y), {"prediction": predicted}, classes=[], columns=COLUMNS
    )
    assert isinstance(model, LossModel)
    return estimator, model


def _batch(estimator: dict[str, Any]) -> np.ndarray:
    frame, _, predicted = _rows(200, 8)
    return loss_features(frame, estimator["columns"], predicted)


def test_the_stored_loss_model_predicts_as_fitted_and_holds_no_pickle(tmp_path: Path) -> None:
    estimator, model = _fit()
    path = tmp_path / LOSS_MODEL_FILE
    model.save(path)
    x = _batch(estimator)
    assert np.any(np.isnan(x))  # missing values take the path the fit gave them
    np.testing.assert_array_equal(load_loss_model(path).predict(x), model.predict(x))
    with zipfile.ZipFile(path) as stored:
        names = stored.namelist()
        assert {Path(n).suffix for n in names} <= {".json", ".npy"}
        for name in names:
            if name.endswith(".npy"):
                with stored.open(name) as member:
                    np.load(member, allow_pickle=False)  # raises on a pickled array


def test_a_loss_model_logged_before_still_estimates_as_it_did() -> None:
    estimator = json.loads((BEFORE / "estimator.json").read_text())
    assert estimator["loss_model"] == "loss_model.npz"
    model = load_loss_model(BEFORE / estimator["loss_model"])
    assert estimate_rmse(estimator, model, _batch(estimator)) == pytest.approx(
        ESTIMATE_BEFORE, rel=1e-12
    )


def test_the_public_path_estimates_what_the_tree_walk_did_on_the_same_fit() -> None:
    # The same rows and seed fit the same trees; the walk over the arrays it stored and
    # scikit-learn's own predict must give one estimate.
    estimator, model = _fit()
    before = json.loads((BEFORE / "estimator.json").read_text())
    assert estimator["dispersion"] == pytest.approx(before["dispersion"], rel=1e-9)
    assert estimator["relative_sd"] == pytest.approx(before["relative_sd"], rel=1e-9)
    old = load_loss_model(BEFORE / before["loss_model"])
    x = _batch(estimator)
    np.testing.assert_allclose(model.predict(x), old.predict(x), rtol=1e-9)
    assert estimate_rmse(estimator, model, x) == pytest.approx(
        estimate_rmse(before, old, x), rel=1e-9
    )


class _Stranger:
    """A type tabslim never stores."""


def test_a_loss_model_file_that_is_broken_or_holds_strange_types_is_one_line(
    tmp_path: Path,
) -> None:
    strange = tmp_path / "strange.skops"
    sio.dump({"regressor": _Stranger(), "scale": 1.0}, strange)
    with pytest.raises(TabslimInputError, match="does not load: .*_Stranger") as refused:
        load_loss_model(strange)
    broken = tmp_path / LOSS_MODEL_FILE
    broken.write_text("not a zip")
    with pytest.raises(TabslimInputError, match="cannot read the loss model") as unread:
        load_loss_model(broken)
    for error in (refused, unread):
        assert "\n" not in str(error.value)
