"""From the validated config to what training takes: the table read, checked, split and
preprocessed, the baseline network's spec, Lightning's fit settings, the CPU thread count, and
the flat metric dicts a run records. `tabslim train` and the study share it; nothing here knows
of Optuna.

The packages of `search` import downwards only (tests/test_layout.py checks it):
config < measure < serving < cluster < inputs < study < front < tracking < monitor < commands.
Names load lazily, from the stub `__init__.pyi`, so that `tabslim --help` imports neither torch
nor MLflow.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
