"""New labels read as the model's classes, compared by value rather than by how a file typed them.

A CSV whose target column has empty cells reads as floats (`1.0`, `0.0`, NaN), while the model
learned the classes `1` and `0`: compared as text, no label matched, the realized metric read
0, and a retrain trained challengers on the classes `'0.0'` and `'1.0'`, which changed the
served columns. Every path by which labels enter (`tabslim drift`, `tabslim retrain`, and so
the realized metric, the gate and the challengers' windows) goes through `coerced_target`.
"""

from __future__ import annotations

import json
import math
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_modules.errors import TabslimInputError
from lightning_modules.task import Task
from search.serving import PREPROCESSOR_FILE

__all__ = ["coerce_labels", "coerced_target", "plain", "same_classes", "served_change"]


def plain(value: Any) -> Any:
    """A label as a plain Python value (`np.int64(0)` -> `0`), for messages and JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _key(value: Any) -> tuple[str, Any]:
    """What a label means, whatever its type: 1, 1.0, "1" and "1.0" are the same class."""
    value = plain(value)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return ("bool", text.lower() == "true")
        try:
            value = float(text)
        except ValueError:
            return ("text", text)
    if isinstance(value, Number) and math.isfinite(float(value)):  # type: ignore[arg-type]
        number = float(value)  # type: ignore[arg-type]
        return ("number", int(number) if number.is_integer() else number)
    return ("text", str(value))


def _as_class_type(value: Any, classes: list[Any]) -> Any:
    """A label no class matches, in the classes' type, so that a challenger that learns it
    sorts and serves it beside them (`2.0` among `[0, 1]` is `2`)."""
    kind, meaning = _key(value)
    if classes and all(isinstance(c, str) for c in classes):
        return str(meaning) if kind != "text" else meaning
    if kind == "number" and all(isinstance(c, int | float) for c in classes):
        return meaning
    return plain(value)


def coerce_labels(labels: pd.Series, task: Task, classes: list[Any], source: str) -> pd.Series:
    """`labels` as the model's own values; missing ones stay missing.

    Raises `TabslimInputError` when no given label is a class the model knows (a wrong column
    or file), or, for regression, when none is a number.
    """
    known = labels.notna()
    if not known.any():
        return labels
    if task.is_regression:
        numbers = pd.to_numeric(labels, errors="coerce")
        if numbers[known].isna().all():
            raise TabslimInputError(
                f"the labels in {source} are not numbers (e.g. {plain(labels[known].iloc[0])!r})"
                ", but the model is a regression"
            )
        return numbers
    lookup = {_key(c): c for c in classes}
    values = [
        None if not present else lookup.get(_key(v), _as_class_type(v, classes))
        for v, present in zip(labels.tolist(), known.tolist(), strict=True)
    ]
    if not any(_key(v) in lookup for v in labels[known].tolist()):
        seen = [plain(v) for v in labels[known].unique()[:5]]
        raise TabslimInputError(
            f"no label in {source} is a class the model knows: it has "
            f"{', '.join(map(repr, seen))}, the model {', '.join(map(repr, classes))}"
        )
    coerced = pd.Series(values, index=labels.index, dtype=object, name=labels.name)
    # Without gaps, the classes' own dtype (int64 for 0/1), as a file without gaps reads.
    return coerced.infer_objects() if known.all() else coerced


def _model_classes(network_dir: Path) -> tuple[Task, list[Any]]:
    stored = json.loads((network_dir / PREPROCESSOR_FILE).read_text())
    return Task(stored["task"]), list(stored.get("classes") or [])


def coerced_target(
    frame: pd.DataFrame, target: str, network_dir: Path, source: str
) -> pd.DataFrame:
    """`frame` with its `target` column (if any) read as the classes of the model saved in
    `network_dir`; the frame as it is without one."""
    if target not in frame.columns:
        return frame
    task, classes = _model_classes(network_dir)
    return frame.assign(**{target: coerce_labels(frame[target], task, classes, source)})


def same_classes(before: list[Any], after: list[Any]) -> str | None:
    """None when a promotion keeps the served output (the `proba_<class>` columns and the
    predicted values' type); else a line that says how it changes."""

    def served(classes: list[Any]) -> list[tuple[str, str]]:
        return [(type(plain(c)).__name__, str(plain(c))) for c in classes]

    if served(before) == served(after):
        return None
    return (
        f"the served output changes: the classes were {[plain(c) for c in before]} and are "
        f"now {[plain(c) for c in after]} (columns "
        f"{', '.join(f'proba_{c}' for c in after)})"
    )


def served_change(champion_dir: Path, model_uri: str) -> str | None:
    """`same_classes` of the champion saved in `champion_dir` and the logged model `model_uri`."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(model_uri)) / "artifacts" / "network"
    (_, before), (_, after) = _model_classes(champion_dir), _model_classes(local)
    return same_classes(before, after)
