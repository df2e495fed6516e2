"""What decides: config, measurement, MLflow tracking and the `tabslim` CLI.

Only this package talks to Optuna and MLflow. Import submodules directly (`search.measure.cost`,
`search.config.schema`); this file stays light so that `tabslim --help` starts fast.
"""

from __future__ import annotations

from lightning_modules.errors import TabslimInputError

__all__ = ["TabslimInputError"]
