"""After deployment: drift between reference and new rows, the drift report, and the
challengers that retraining trains.

The packages of `search` import downwards only (tests/test_layout.py checks it):
config < measure < serving < cluster < inputs < study < front < tracking < monitor < commands.
Names load lazily, from the stub `__init__.pyi`, so that `tabslim --help` imports neither torch
nor MLflow.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
