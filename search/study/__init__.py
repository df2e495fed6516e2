"""The Optuna study: storage, the study's settings, samplers, the search space, the objective
that trains one candidate, and the context it runs in.

The packages of `search` import downwards only (tests/test_layout.py checks it):
config < measure < serving < cluster < inputs < study < front < tracking < monitor < commands.
Names load lazily, from the stub `__init__.pyi`, so that `tabslim --help` imports neither torch
nor MLflow.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
