"""A regression's loss model (DLE, `search.serving.estimator`): how it is stored and read back.

The loss model is a fitted `HistGradientBoostingRegressor`. It is stored with skops
(`LOSS_MODEL_FILE`): a zip of JSON and `.npy` arrays written with `allow_pickle=False`, read back
only when every type in it is one tabslim trusts. It predicts through scikit-learn's public
`predict`, so nothing here reads scikit-learn's private tree tables and scikit-learn is not
capped for it. skops is already installed (MLflow depends on it).

ONNX (skl2onnx) was the first choice, for a graph that ONNX Runtime runs without
scikit-learn. skl2onnx 1.20.0 cannot convert this regressor beside the pinned protobuf 7: it
hands a Python bool to an integer attribute of the tree node ("Expected an int, got a boolean").

Models logged before (`LEGACY_LOSS_MODEL_FILE`) stored the trees as plain arrays that tabslim had
read out of the private tables; `load_loss_model` still reads them and walks those arrays with
NumPy. That walk reads only tabslim's own file, not scikit-learn.

skops and scikit-learn are imported inside the functions: `tabslim --help` must not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lightning_modules.errors import TabslimInputError

__all__ = ["LEGACY_LOSS_MODEL_FILE", "LossModel", "LossPredictor", "load_loss_model"]

# The name before issue 32: the trees as plain arrays.
LEGACY_LOSS_MODEL_FILE = "loss_model.npz"
# What skops may build when it reads a loss model back: the regressor's own module. skops trusts
# scikit-learn's public estimators by default, not the tree predictors they hold.
_TRUSTED_PREFIX = "sklearn.ensemble._hist_gradient_boosting."


class LossPredictor(Protocol):
    """What `estimate_rmse` needs of a loss model, whichever format it came from."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LossModel:
    """A fitted regressor of the squared error scaled by 1 / `scale` (Poisson loss, log link)."""

    regressor: Any  # sklearn.ensemble.HistGradientBoostingRegressor, fitted
    scale: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N,) predicted squared errors of (N, features) rows; NaN is a missing value."""
        from threadpoolctl import threadpool_limits

        # One OpenMP thread, as for the fit (`search.serving.estimator`): on a busy 2-core
        # machine scikit-learn's default thread pool costs far more than these few trees.
        with threadpool_limits(limits=1, user_api="openmp"):
            return self.scale * self.regressor.predict(x)

    def save(self, path: Path) -> None:
        import skops.io as sio

        sio.dump({"regressor": self.regressor, "scale": float(self.scale)}, path)


@dataclass(frozen=True)
class _StoredTrees:
    """A loss model logged before issue 32: all trees' nodes concatenated as plain arrays.

    `left` and `right` index that whole array. A row's prediction is
    `scale * exp(baseline + sum over trees of its leaf's value)`.
    """

    roots: np.ndarray  # (trees,)
    feature: np.ndarray  # (nodes,)
    threshold: np.ndarray  # (nodes,) go left when the value is <= it
    missing_left: np.ndarray  # (nodes,) where a missing value goes
    left: np.ndarray  # (nodes,)
    right: np.ndarray  # (nodes,)
    leaf: np.ndarray  # (nodes,)
    value: np.ndarray  # (nodes,) a leaf's raw contribution
    baseline: float
    scale: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()  # (N, trees)
        while not self.leaf[node].all():
            values = x[rows, self.feature[node]]
            go_left = np.where(
                np.isnan(values), self.missing_left[node], values <= self.threshold[node]
            )
            step = np.where(go_left, self.left[node], self.right[node])
            node = np.where(self.leaf[node], node, step)
        return self.scale * np.exp(self.baseline + self.value[node].sum(axis=1))


def _read_legacy(path: Path) -> _StoredTrees:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    return _StoredTrees(
        **{k: v for k, v in arrays.items() if k not in ("baseline", "scale")},
        baseline=float(arrays["baseline"]),
        scale=float(arrays["scale"]),
    )


def load_loss_model(path: Path) -> LossPredictor:
    """The loss model stored at `path`, in today's format or the plain arrays logged before."""
    if path.suffix == ".npz":
        return _read_legacy(path)
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as error:  # a zip skops cannot read: say which file, in one line
        raise TabslimInputError(f"cannot read the loss model {path}: {error}") from error
    refused = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIX)]
    if refused:
        raise TabslimInputError(
            f"the loss model {path} holds types tabslim does not load: {', '.join(refused)}"
        )
    stored = sio.load(path, trusted=untrusted)
    return LossModel(stored["regressor"], float(stored["scale"]))
