"""What a table asks for, as a type: the task, and what depends on it.

The task enters as a string (a config, a stored preprocessor, profile or study) and is parsed
there, once, with `Task(value)`; past that point code asks the task (`task.is_regression`,
`task.metric`) instead of comparing names. A `Task` is a `str` whose text is the config's name,
so it is stored, logged and compared as that name, and what was stored before parses again.

This module imports nothing of the project: everything else may import it.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Task"]


class Task(str, Enum):
    """binary, multiclass, regression or anomaly (a rare positive class found by an autoencoder's
    reconstruction error, `lightning_modules.anomaly`)."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"
    ANOMALY = "anomaly"

    # The name itself, as `enum.StrEnum` gives it (Python 3.11+): a mixed-in `str, Enum` would
    # print as "Task.BINARY" in f-strings, MLflow params and ONNX metadata.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)

    @property
    def is_classification(self) -> bool:
        """Binary or multiclass: one output per class, trained with softmax."""
        return self in (Task.BINARY, Task.MULTICLASS)

    @property
    def is_regression(self) -> bool:
        """A number to predict: the target is standardised, and there are no classes."""
        return self is Task.REGRESSION

    @property
    def is_anomaly(self) -> bool:
        return self is Task.ANOMALY

    @property
    def metric(self) -> str:
        """The metric a study optimises and the floor is drawn on."""
        return {Task.REGRESSION: "rmse", Task.ANOMALY: "pr_auc"}.get(self, "accuracy")

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger `metric` is better: accuracy and PR AUC yes, RMSE (an error) no."""
        return not self.is_regression

    @property
    def scored_output(self) -> str:
        """The decoded output (`Preprocessor.decode`) that `metric` is read from: the anomaly
        score (PR AUC ranks rows by it), else the prediction."""
        return "anomaly_score" if self.is_anomaly else "prediction"
