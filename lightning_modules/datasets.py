"""Bundled tables, available by name without any download.

The scikit-learn ones ship inside scikit-learn; the synthetic ones are generated from a seed and
carry what real tables have and the sklearn ones lack: categorical columns and missing values.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from lightning_modules.errors import TabslimInputError

TARGET = "target"


def _sklearn(loader: str) -> Callable[[int], pd.DataFrame]:
    """scikit-learn's `loader` table; sklearn is imported when one is loaded (it takes about a
    second, which the config's check of a dataset name must not pay)."""

    def load(seed: int = 0) -> pd.DataFrame:  # noqa: ARG001 - fixed data, seed unused
        from sklearn import datasets as sk_datasets

        frame = getattr(sk_datasets, loader)(as_frame=True).frame
        frame.columns = [str(c) for c in frame.columns]
        return frame.rename(columns={frame.columns[-1]: TARGET})

    return load


def synthetic(task: str, seed: int = 0, n_rows: int = 2000) -> pd.DataFrame:
    """A seeded table with numeric and categorical columns and missing values.

    The target depends on both kinds of column, so that a network has to use the embeddings.
    """
    rng = np.random.default_rng(seed)
    n_num = 12
    x = rng.normal(size=(n_rows, n_num))
    colors = np.array(["red", "green", "blue", "black"])
    sizes = np.array(["S", "M", "L"])
    cities = np.array([f"city_{i}" for i in range(20)])
    color = rng.choice(colors, size=n_rows)
    size = rng.choice(sizes, size=n_rows, p=[0.5, 0.3, 0.2])
    city = rng.choice(cities, size=n_rows)
    city_effect = rng.normal(size=len(cities))[
        np.searchsorted(cities, city, sorter=np.argsort(cities))
    ]
    signal = (
        x[:, 0] * x[:, 1]
        + np.sin(2 * x[:, 2])
        + 0.8 * x[:, 3]
        - 0.5 * x[:, 4] ** 2
        + np.where(color == "red", 1.0, 0.0)
        - np.where(size == "L", 0.8, 0.0)
        + 0.5 * city_effect
    )
    frame = pd.DataFrame({f"num_{i}": x[:, i] for i in range(n_num)})
    frame["color"] = color
    frame["size"] = size
    frame["city"] = city
    # Values go missing at random, in numeric and categorical columns alike.
    for column in ["num_0", "num_5", "color"]:
        frame.loc[rng.random(n_rows) < 0.1, column] = np.nan
    if task == "regression":
        frame[TARGET] = signal + 0.3 * rng.normal(size=n_rows)
    elif task == "classification":
        # Three classes by the terciles of a noisy signal.
        noisy = signal + 0.5 * rng.normal(size=n_rows)
        frame[TARGET] = np.digitize(noisy, np.quantile(noisy, [1 / 3, 2 / 3]))
    else:
        raise TabslimInputError(
            f"synthetic task must be classification or regression, got {task!r}"
        )
    return frame


DRIFT_KINDS = ("none", "covariate", "concept")


def drift_batch(kind: str, seed: int = 0, n_rows: int = 2000) -> pd.DataFrame:
    """A batch of a fixed churn-like process, as it looks after `kind` of drift.

    - "none": the reference process itself (a new sample of it);
    - "covariate": `tenure` moves up by one standard deviation and `plan` leans to "premium",
      while the rule from features to target stays;
    - "concept": the features keep their distribution, but `tenure` now pushes the other way.
    `noise` never matters to the target. Seeded: the same arguments give the same rows.
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"drift kind must be one of {DRIFT_KINDS}, but got {kind=}.")
    rng = np.random.default_rng(seed)
    tenure = rng.normal(1.0 if kind == "covariate" else 0.0, 1.0, n_rows)
    usage = rng.normal(0.0, 1.0, n_rows)
    support = rng.normal(0.0, 1.0, n_rows)
    noise = rng.normal(0.0, 1.0, n_rows)
    plans = np.array(["basic", "plus", "premium"])
    shares = [0.2, 0.3, 0.5] if kind == "covariate" else [0.5, 0.3, 0.2]
    plan = rng.choice(plans, size=n_rows, p=shares)
    effect = np.select([plan == "basic", plan == "plus"], [0.5, 0.0], -0.5)
    sign = -1.0 if kind == "concept" else 1.0
    logit = sign * 1.5 * tenure - 1.0 * usage + 0.7 * support + effect
    churned = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))
    return pd.DataFrame(
        {
            "tenure": tenure,
            "usage": usage,
            "support": support,
            "noise": noise,
            "plan": plan,
            "churned": np.where(churned, "yes", "no"),
        }
    )


def synthetic_fraud(seed: int = 0, n_rows: int = 6000, fraud_share: float = 0.02) -> pd.DataFrame:
    """A seeded, imbalanced table in the credit-card-fraud style, for the anomaly task.

    Normal rows lie near a 4-dimensional subspace of 16 correlated features (as PCA-like card
    features do); fraud rows leave it along directions normal rows never take, with somewhat
    larger amounts. The target `target` is "fraud" for about `fraud_share` of the rows.
    """
    rng = np.random.default_rng(seed)
    n_features, n_latent = 16, 4
    mixing = rng.normal(size=(n_latent, n_features))
    latent = rng.normal(size=(n_rows, n_latent))
    x = latent @ mixing + 0.3 * rng.normal(size=(n_rows, n_features))
    fraud = rng.random(n_rows) < fraud_share
    # Off the normal subspace: a random direction orthogonal to the mixing rows' span.
    direction = rng.normal(size=n_features)
    basis, _ = np.linalg.qr(mixing.T)
    direction -= basis @ (basis.T @ direction)
    direction /= np.linalg.norm(direction)
    x[fraud] += np.outer(rng.uniform(1.5, 4.0, fraud.sum()), direction)
    amount = np.exp(rng.normal(3.0, 1.0, n_rows)) * np.where(fraud, 1.8, 1.0)
    frame = pd.DataFrame(x, columns=[f"v{i}" for i in range(n_features)])
    frame["amount"] = amount.round(2)
    frame[TARGET] = np.where(fraud, "fraud", "normal")
    return frame


BUNDLED: dict[str, Callable[[int], pd.DataFrame]] = {
    "synthetic_fraud": synthetic_fraud,
    "breast_cancer": _sklearn("load_breast_cancer"),
    "digits": _sklearn("load_digits"),
    "wine": _sklearn("load_wine"),
    "diabetes": _sklearn("load_diabetes"),
    "synthetic_classification": partial(synthetic, "classification"),
    "synthetic_regression": partial(synthetic, "regression"),
}


def load_bundled(name: str, seed: int = 0) -> pd.DataFrame:
    """The bundled table `name`, with its target in the column `target`."""
    if name not in BUNDLED:
        raise TabslimInputError(
            f"unknown bundled dataset {name!r}; expected one of {sorted(BUNDLED)}"
        )
    return BUNDLED[name](seed)
