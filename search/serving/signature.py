"""The input schema a logged model carries: each feature column with its exact training type.

MLflow enforces it before the model sees a row (`pyfunc.load_model(...).predict`, and `mlflow
models serve`), so text in a numeric column is refused with an error that names the column,
instead of being coerced to a missing value and imputed. What MLflow's enforcement allows
(`mlflow.models.utils._enforce_mlflow_datatype`, MLflow 3.17):

- a `double` column takes float64 with gaps (NaN, or None in an object column): rows with
  missing values score as the preprocessing imputes them; it refuses int64 ("can not safely
  convert"), so a column trained as float refuses a batch whose numbers are all whole, unless
  sent as floats;
- a `long` column takes any integer type, and refuses float64, which includes an integer
  column with a gap (pandas has no missing integer): send such a column as `Int64`, or log
  the model from training data with a gap in it;
- a `string` column takes text (object or pandas' string dtype), None among it included.
"""

from __future__ import annotations

import pandas as pd
from mlflow.types import ColSpec, Schema

from lightning_modules.preprocessing import Preprocessor

__all__ = ["input_schema"]


def _type(column: pd.Series, numeric: bool) -> str:
    if not numeric:
        return "string"
    if pd.api.types.is_bool_dtype(column):
        return "boolean"
    if pd.api.types.is_integer_dtype(column):
        return "long"
    return "double"


def input_schema(preprocessor: Preprocessor, sample: pd.DataFrame) -> Schema:
    """The feature columns of `preprocessor`, typed as in `sample` (training rows).

    Columns the model does not take (identifiers, the target) are left out: MLflow ignores
    extra columns with a warning, so rows may still carry them.
    """
    return Schema(
        [
            ColSpec(_type(sample[name], name in preprocessor.numeric), name)
            for name in preprocessor.feature_columns
        ]
    )
