"""Can these rows certify the floor? Said before the candidates train, and per candidate after.

Both projections read only the baseline's and the candidates' validation rows (the selection
rows) and the *number* of certification rows, never their values: a walk ordered by what the
certification rows say would certify by construction.

- Before the candidates train (`power_statement`): a candidate as accurate as the baseline
  disagrees with it on about as many rows as the baseline gets wrong (for regression: its
  squared errors vary as the baseline's do), which gives the interval's expected half-width on
  the certification rows and the smallest floor they certify with 80% power.
- After (`chance_to_certify`): a candidate's validation delta and interval, rescaled from the
  validation rows to the certification rows (an interval narrows with the square root of its
  rows), give its chance to pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial
from scipy import stats

from search.measure import ALPHA
from search.study import attributes
from search.study.context import SearchContext
from search.study.objective import ROWS_FILE
from search.study.settings import StudySettings

__all__ = [
    "PowerStatement",
    "chance_to_certify",
    "power_statement",
    "read_power",
    "state_power",
]

_Z = float(stats.norm.ppf(1 - ALPHA))
# The power at which "these rows can certify a floor" is said: the usual 80%.
POWER = 0.8
_Z_POWER = float(stats.norm.ppf(POWER))


@dataclass(frozen=True)
class PowerStatement:
    """What `rows` certification rows can certify: `half_width`, the expected 95% half-width
    of a candidate as good as the baseline, and `floor`, the smallest floor they certify
    with 80% power, both in `max_metric_drop`'s units; `rows_needed` for the floor asked."""

    rows: int
    half_width: float
    floor: float
    asked: float
    rows_needed: int
    basis: str

    @property
    def can_certify(self) -> bool:
        return self.floor <= self.asked  # False where nothing was projected (NaN)

    def text(self) -> str:
        if self.rows and not math.isfinite(self.half_width):
            return (
                f"certification: {self.rows} held-out rows; what they can certify for "
                f"{self.basis} is not projected before the candidates train (the "
                "certification table shows each candidate's interval)"
            )
        if self.rows == 0:
            return (
                "certification: no held-out rows (data.certify_fraction 0): the champion is "
                "certified on the validation rows that also selected it, an optimistic promise"
            )
        head = (
            f"certification: {self.rows} held-out rows; a candidate as good as the baseline "
            f"({self.basis}) gets about +/-{self.half_width:.3g}"
        )
        if self.can_certify:
            return f"{head}: they can certify the floor {self.asked:g} (80% power)"
        return (
            f"{head}: too few to certify the floor {self.asked:g}; the smallest floor they "
            f"certify with 80% power is {self.floor:.2g}, and about {self.rows_needed:,} rows "
            f"would certify {self.asked:g}"
        )


def _unit_spread(metric: str, baseline_val_rows: np.ndarray) -> tuple[float, str]:
    """The standard deviation of one row's paired difference, in `max_metric_drop`'s units,
    for a candidate as good as the baseline; and the words that say what it rests on."""
    rows = np.asarray(baseline_val_rows, dtype=float)
    if metric == "accuracy":
        errors = float(1 - rows.mean())
        # It disagrees on about as many rows as the baseline errs on (at least one in the
        # split: no disagreement at all is not a projection).
        share = max(errors, 1 / len(rows))
        return math.sqrt(share), f"disagreeing on about {share:.1%} of rows, its error rate"
    if metric == "rmse":
        # Relative: the spread of the squared errors over their mean, halved for the root,
        # with the candidate's errors half correlated with the baseline's.
        spread = float(rows.std() / max(rows.mean(), 1e-12)) / 2
        return spread, "squared errors that vary as the baseline's"
    # PR AUC has no row-wise spread to project from before any candidate exists.
    return math.nan, "PR AUC"


def power_statement(
    settings: StudySettings, baseline_val_rows: np.ndarray, certify_rows: int
) -> PowerStatement:
    """What `certify_rows` held-out rows can certify, from the baseline's validation rows."""
    asked = settings.max_metric_drop
    if certify_rows == 0:
        return PowerStatement(0, math.inf, math.inf, asked, 0, "")
    spread, basis = _unit_spread(settings.metric, baseline_val_rows)
    if not math.isfinite(spread):
        return PowerStatement(certify_rows, math.nan, math.nan, asked, 0, basis)
    half = _Z * spread / math.sqrt(certify_rows)
    floor = (_Z + _Z_POWER) * spread / math.sqrt(certify_rows)
    needed = math.ceil(((_Z + _Z_POWER) * spread / asked) ** 2) if asked > 0 else 0
    return PowerStatement(certify_rows, half, floor, asked, needed, basis)


def record_power(study: optuna.Study, statement: PowerStatement) -> None:
    attributes.write_power(study, asdict(statement))


def read_power(study: optuna.Study) -> PowerStatement | None:
    stored = attributes.power_dict(study)
    return PowerStatement(**stored) if stored else None


def chance_to_certify(
    trial: FrozenTrial, settings: StudySettings, val_rows: int, certify_rows: int
) -> float:
    """The chance that `trial` passes on `certify_rows` held-out rows, projected from its
    validation delta and interval on `val_rows` rows (a normal approximation)."""
    metrics = attributes.trial_metrics(trial)
    delta = metrics.get("val_delta")
    low, high = metrics.get("val_delta_ci_low"), metrics.get("val_delta_ci_high")
    if delta is None or low is None or high is None or certify_rows == 0:
        return 0.0
    drop = settings.allowed_drop()
    margin = (delta + drop) if settings.higher_is_better else (drop - delta)
    spread = (high - low) / 2 / _Z * math.sqrt(val_rows)
    if settings.metric == "accuracy":
        # A zero-width validation interval (no disagreement there) is not certainty: the
        # certification's test keeps a spread of about sqrt(drop) per row under its null.
        spread = max(spread, math.sqrt(max(drop, 1 / max(val_rows, 1))))
    se = spread / math.sqrt(certify_rows)
    if se <= 0:
        return 1.0 if margin > 0 else 0.0
    return float(stats.norm.cdf(margin / se - _Z))


def state_power(study: optuna.Study, ctx: SearchContext) -> PowerStatement | None:
    """The statement for this study, from its baseline's validation rows, recorded on the
    study; None before the baseline has finished."""
    settings = StudySettings.read(study)
    if settings.baseline_trial is None:
        return None
    if ctx.baseline_rows is not None:
        rows = ctx.baseline_rows["val"]
    else:
        with np.load(ctx.network_dir(study, settings.baseline_trial) / ROWS_FILE) as stored:
            rows = stored["val"]
    statement = power_statement(settings, rows, len(ctx.data.certify_frame))
    record_power(study, statement)
    return statement
