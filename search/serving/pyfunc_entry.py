"""MLflow models-from-code entry: MLflow runs this file to get the model object.

Logging a file instead of a Python object means nothing is cloudpickled into the model.
"""

from mlflow.models import set_model

from search.serving.served_model import TabslimModel

set_model(TabslimModel())
