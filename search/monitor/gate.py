"""What `tabslim retrain` decides: whether the champion needs retraining, and whether a
challenger may replace it.

A challenger passes the gate when its paired holdout gain over the champion clears the minimum
gain with its whole 95% interval, and it is no larger and no slower than the champion allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from lightning_modules.metrics import HIGHER_IS_BETTER, row_scores
from lightning_modules.networks import infer
from lightning_modules.preprocessing import Preprocessor
from search.measure import PairedDelta, compare_latency

__all__ = [
    "LATENCY_SLACK",
    "SIZE_SLACK",
    "PromotionVerdict",
    "frame_scores",
    "latency_ratio",
    "retrain_reasons",
]

# The two-sided 95% normal quantile.
_Z = 1.959964
# A challenger may be this much larger or slower than the champion and still fit its budget:
# new categories widen an embedding a little, and latency timing is noisy.
SIZE_SLACK, LATENCY_SLACK = 1.05, 1.25


def retrain_reasons(
    report: Any, profile: dict, tolerance: float, threshold: float, force: bool
) -> list[str]:
    """Why the champion needs retraining; none means it does not.

    The metric realized on labelled new rows, and the one estimated on unlabelled rows (when
    the labels come late), each call for a retrain only when its whole 95% interval lies
    below validation by more than `tolerance`. A point estimate that fell further than the
    tolerance while its interval did not is no reason, and `report.decision_notes` says so.
    """
    reasons = ["--force"] if force else []
    for kind, figure in (("realized", report.realized), ("estimated", report.estimated)):
        if figure is None or getattr(figure, "withheld", False):
            continue
        allowed = _fell_beyond(figure, tolerance, _reference_spread(profile, figure))
        method = f" ({figure.method})" if kind == "estimated" else ""
        said = (
            f"{kind} {figure.metric}{method} {figure.value:.4f} [{figure.low:.4f}, "
            f"{figure.high:.4f}] against {figure.reference:.4f} when logged"
        )
        if allowed is not None:
            reasons.append(f"{said} (the whole 95% interval beyond the tolerance, {allowed:.4g})")
        elif (drop := _point_drop(figure, tolerance)) is not None:
            report.decision_notes.append(
                f"{said}: {drop:.4g} worse, past --tolerance {tolerance:g}, but no reason to "
                "retrain, since its 95% interval reaches back within the tolerance (a retrain "
                "needs the whole interval beyond it)"
            )
    if report.score >= threshold:
        reasons.append(f"drift score {report.score:.3f} >= {threshold:g}")
    return reasons


def _reference_spread(profile: dict, figure: Any) -> float:
    """The standard error of the reference metric itself, from the rows it was read on when
    the model was logged (0 where it cannot be said: RMSE, PR AUC, or an older profile)."""
    reference = profile.get("validation") or {}
    rows = int(reference.get("rows") or 0)
    if figure.metric != "accuracy" or rows <= 0:
        return 0.0
    value = float(figure.reference)
    return math.sqrt(max(value * (1 - value), 0.0) / rows)


def _fell_beyond(figure: Any, tolerance: float, reference_spread: float = 0.0) -> float | None:
    """The tolerance in the metric's terms when `figure`'s whole interval fell beyond it from
    its reference; None when it did not.

    The interval is of the difference: the new rows' spread and the reference's own (a few
    hundred held-out rows read the reference to a couple of points), added in quadrature.
    """
    higher = HIGHER_IS_BETTER[figure.metric]
    # RMSE's tolerance is relative, as the search's floor is. The whole 95% interval must lie
    # beyond it: a tolerance below the noise of the new rows would retrain on noise.
    allowed = tolerance if higher else tolerance * figure.reference
    # The end of the interval on the side of the reference: the smallest fall the rows allow.
    half = (figure.high - figure.value) if higher else (figure.value - figure.low)
    half = math.hypot(half, _Z * reference_spread)
    closest = figure.value + half if higher else figure.value - half
    fell = (figure.reference - closest) * (1 if higher else -1)
    return float(allowed) if fell > allowed else None


def _point_drop(figure: Any, tolerance: float) -> float | None:
    """How much worse than validation `figure`'s point estimate is, when by more than the
    tolerance (in the metric's terms); None otherwise."""
    higher = HIGHER_IS_BETTER[figure.metric]
    allowed = tolerance if higher else tolerance * figure.reference
    drop = (figure.reference - figure.value) * (1 if higher else -1)
    return float(drop) if drop > allowed else None


def frame_scores(
    network: nn.Module, prep: Preprocessor, frame: pd.DataFrame, target: str
) -> np.ndarray:
    """Per holdout row, what the task's metric is made of (`lightning_modules.metrics`), for
    the paired comparison of challenger and champion on the same rows."""
    inputs = prep.transform(frame)
    output = infer(network, inputs["x_num"], inputs["x_cat"])
    decoded = prep.decode(output, inputs["x_num"])
    positive = prep.classes[1] if prep.task.is_anomaly else None
    return row_scores(prep.task, decoded[prep.task.scored_output], frame[target], positive)


def latency_ratio(candidate: nn.Module, champion: nn.Module) -> float:
    """Challenger time over champion time, interleaved: two absolute timings taken a second
    apart differ by more than the gate's slack on a busy machine, which failed a challenger of
    the champion's own shape (x1.3) and promoted a worse one."""
    return compare_latency(
        candidate, champion, runtime="onnxruntime", batch_size=1024, max_seconds=0.3
    ).median


@dataclass(frozen=True)
class PromotionVerdict:
    """A challenger against the champion on the holdout rows."""

    delta: PairedDelta
    size: float
    latency: float
    passed: bool

    @classmethod
    def judge(
        cls, delta: PairedDelta, size: float, latency: float, metric: str, min_gain: float
    ) -> PromotionVerdict:
        higher = HIGHER_IS_BETTER[metric]
        gain_clears = delta.low > min_gain if higher else delta.high < -min_gain
        within = size <= SIZE_SLACK and latency <= LATENCY_SLACK
        return cls(delta, size, latency, gain_clears and within)

    def figures(self) -> dict[str, float]:
        """The MLflow metrics of the challenger's run."""
        return {
            "holdout_delta": self.delta.delta,
            "holdout_delta_ci_low": self.delta.low,
            "holdout_delta_ci_high": self.delta.high,
            "size_ratio": self.size,
            "latency_ratio": self.latency,
        }

    def line(self, kind: str, metric: str, rows: int) -> str:
        d = self.delta
        return (
            f"{kind:<10} {metric} delta on {rows} holdout rows {d.delta:+.4f} "
            f"[{d.low:+.4f}, {d.high:+.4f}]; size x{self.size:.2f}, latency x{self.latency:.2f}"
            f": {'passes' if self.passed else 'does not pass'} the gate"
        )
